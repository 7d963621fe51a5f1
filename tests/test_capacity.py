"""Capacity planner: the 8B model on one A100 80 GB, checked against a hand calculation."""

from __future__ import annotations

import json

import pytest

from tasks.plan.capacity import EngineShape, plan_capacity
from tasks.plan.model_arch import LLAMA_3_1_8B, ModelConfigError, arch_from_hf_config, built_in_arch, load_arch
from tasks.settings import Workload
from tasks.plan.skus import find_sku

# Llama-3.1-8B's config.json (the keys the planner reads), as DeepSeek-R1-Distill-Llama-8B ships it.
LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
GIB = 2**30


def shape(**kw) -> EngineShape:
    base = dict(
        max_num_seqs=256, max_model_len=8192, gpu_memory_utilization=0.90, tensor_parallel_size=1,
        max_concurrent_requests_per_instance=256, request_timeout_ms=84_000,
        readiness_window_s=960, liveness_window_s=900,
    )
    return EngineShape(**{**base, **kw})


def test_8b_on_a100_80gb_matches_hand_calculation():
    plan = plan_capacity(LLAMA_3_1_8B, find_sku("Standard_NC24ads_A100_v4"), shape(), Workload(), 3000.0)
    # Parameters: embeddings + lm_head 2 x 128256 x 4096 = 1,050,673,152; per layer q,o 2 x 4096^2,
    # k,v 2 x 4096 x 1024, MLP 3 x 4096 x 14336, 2 norms x 4096 = 218,112,000; x 32 + final norm 4096.
    assert LLAMA_3_1_8B.params == 1_050_673_152 + 32 * 218_112_000 + 4096 == 8_030_261_248
    assert plan.weights_bytes == 8_030_261_248 * 2 == 16_060_522_496  # ~14.96 GiB in bf16
    assert plan.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072  # 128 KiB
    # 80 GiB x 0.90 - weights - 2 GiB runtime overhead
    assert plan.gpu_memory_bytes == 80 * GIB
    assert plan.kv_cache_bytes == 77_309_411_328 - 16_060_522_496 - 2 * GIB == 59_101_405_184
    assert plan.kv_tokens == 59_101_405_184 // 131_072 == 450_907
    # 512 prompt + 750 output = 1262 tokens = 79 blocks of 16; 28,181 blocks // 79 = 356 sequences
    assert plan.tokens_per_request == 1262
    assert plan.max_concurrent_sequences == (450_907 // 16) // 79 == 356
    assert plan.recommended_max_num_seqs == 256  # power of two <= min(356, 256)
    assert plan.recommended_max_concurrent_requests_per_instance == 256
    assert plan.azure_admitted_per_instance == 512
    # 750 tokens at 30 tok/s = 25 s; + 3 s TTFT = 28 s; x2 (Azure queue) x1.5 headroom = 84 s
    assert plan.decode_seconds == 25.0
    assert plan.min_request_timeout_ms == 28_000
    assert plan.recommended_request_timeout_ms == 84_000
    assert plan.recommended_probe_window_s == 600


def test_recommended_timeout_is_capped_at_azure_maximum():
    slow = Workload(output_tokens=2000, decode_tokens_per_s=30.0)  # 66.7 s + 3 s -> x3 = 209 s
    plan = plan_capacity(LLAMA_3_1_8B, find_sku("Standard_NC24ads_A100_v4"), shape(), slow, 3000.0)
    assert plan.min_request_timeout_ms == 70_000
    assert plan.recommended_request_timeout_ms == 180_000


def test_more_memory_means_more_sequences_and_tensor_parallel_pools_gpus():
    sku2 = find_sku("Standard_NC48ads_A100_v4")
    one = plan_capacity(LLAMA_3_1_8B, sku2, shape(), Workload(), 3000.0)
    two = plan_capacity(LLAMA_3_1_8B, sku2, shape(tensor_parallel_size=2), Workload(), 3000.0)
    assert two.gpu_memory_bytes == 2 * one.gpu_memory_bytes
    assert two.kv_cache_bytes == 2 * 77_309_411_328 - 16_060_522_496 - 4 * GIB
    assert two.max_concurrent_sequences > one.max_concurrent_sequences


def test_sequences_bounded_by_max_model_len_when_requests_are_longer():
    long = Workload(prompt_tokens=30_000, output_tokens=2000)
    plan = plan_capacity(LLAMA_3_1_8B, find_sku("Standard_NC24ads_A100_v4"), shape(max_model_len=4096), long, 3000.0)
    assert plan.tokens_per_request == 4096
    assert plan.max_concurrent_sequences == 28_181 // 256


def test_unset_max_model_len_uses_the_models_context():
    plan = plan_capacity(LLAMA_3_1_8B, find_sku("Standard_NC24ads_A100_v4"), shape(max_model_len=None),
                         Workload(), 3000.0)
    assert plan.max_model_len == 131_072


def test_config_json_gives_the_built_in_numbers(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_8B_CONFIG))
    arch = load_arch(path)
    assert (arch.params, arch.layers, arch.kv_heads, arch.head_dim, arch.dtype_bytes) == (
        LLAMA_3_1_8B.params, 32, 8, 128, 2)
    assert arch.max_position_embeddings == 131_072
    assert built_in_arch("deepseek-ai/DeepSeek-R1-Distill-Llama-8B") is LLAMA_3_1_8B


def test_config_json_with_explicit_head_dim_and_tied_embeddings():
    cfg = {**LLAMA_8B_CONFIG, "head_dim": 64, "tie_word_embeddings": True, "torch_dtype": "float32"}
    arch = arch_from_hf_config(cfg)
    assert arch.head_dim == 64 and arch.dtype_bytes == 4
    assert arch.params < LLAMA_3_1_8B.params


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "config.json"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in LLAMA_8B_CONFIG.items() if k != "hidden_size"}), "hidden_size"),
        (json.dumps({**LLAMA_8B_CONFIG, "torch_dtype": "int3"}), "int3"),
        (json.dumps({**LLAMA_8B_CONFIG, "num_hidden_layers": "many"}), "many"),
    ],
)
def test_bad_config_json_is_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ModelConfigError, match=expected):
        load_arch(path)
