"""Capacity planner: what one instance of a GPU SKU can serve, and settings consistent with it.

Pure arithmetic over a ``ModelArch``, the SKU table and the engine/request settings, so the numbers
can be checked by hand (docs/plan.md shows the formulas; tests/test_capacity.py checks them for the
8B model on an A100 80 GB). The policy gate turns disagreements into ``capacity`` findings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tasks.plan.model_arch import ModelArch
from tasks.settings import MAX_REQUEST_TIMEOUT_MS, Workload
from tasks.plan.skus import GpuSku

GIB = 2**30
# NVIDIA's "80 GB" A100 reports 80 GiB to CUDA; the SKU table's figures are read as GiB.
RUNTIME_OVERHEAD_BYTES = 2 * GIB  # per GPU: activations at profiling, CUDA graphs, NCCL, allocator slack
KV_BLOCK_TOKENS = 16  # vLLM's default paged-attention block size: KV is allocated in whole blocks
VLLM_MAX_NUM_SEQS_CAP = 256  # beyond this, per-sequence decode speed falls faster than batching gains
AZURE_QUEUE_FACTOR = 2  # Azure admits 2 x max_concurrent_requests_per_instance before answering 429
TIMEOUT_HEADROOM = 1.5
PROBE_HEADROOM = 2.0  # a probe window this many times the model load time tolerates a slow pull


@dataclass(frozen=True)
class EngineShape:
    """What the planner needs from one deployment: engine arguments, request settings, probes."""

    max_num_seqs: int
    max_model_len: int | None  # None: vLLM uses the model's max_position_embeddings
    gpu_memory_utilization: float
    tensor_parallel_size: int
    max_concurrent_requests_per_instance: int
    request_timeout_ms: int
    readiness_window_s: int
    liveness_window_s: int


@dataclass(frozen=True)
class CapacityPlan:
    model: str
    instance_type: str
    gpu_memory_bytes: int  # of the GPUs the engine uses (tensor_parallel_size of them)
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    kv_tokens: int
    max_model_len: int
    model_max_position_embeddings: int
    tokens_per_request: int
    max_concurrent_sequences: int  # expected-size requests whose KV fits at once
    recommended_max_num_seqs: int
    recommended_max_concurrent_requests_per_instance: int
    azure_admitted_per_instance: int  # in flight before Azure answers 429
    decode_seconds: float
    min_request_timeout_ms: int
    recommended_request_timeout_ms: int
    model_load_seconds: float
    recommended_probe_window_s: int

    def as_dict(self) -> dict:
        return asdict(self)


def weights_bytes(arch: ModelArch) -> int:
    return arch.params * arch.dtype_bytes


def kv_bytes_per_token(arch: ModelArch) -> int:
    """K and V, for every layer and KV head: 2 x layers x kv_heads x head_dim x dtype bytes."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * arch.dtype_bytes


def kv_cache_bytes(arch: ModelArch, sku: GpuSku, gpu_memory_utilization: float, tp: int) -> int:
    """What vLLM's profiler leaves for the KV cache: its memory share minus weights and overhead."""
    gpu_bytes = tp * sku.gpu_memory_gb * GIB
    return math.floor(gpu_bytes * gpu_memory_utilization) - weights_bytes(arch) - tp * RUNTIME_OVERHEAD_BYTES


def floor_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1) if n >= 1 else 0


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def plan_capacity(
    arch: ModelArch, sku: GpuSku, shape: EngineShape, workload: Workload, ttft_budget_ms: float
) -> CapacityPlan:
    kv_per_token = kv_bytes_per_token(arch)
    kv_bytes = kv_cache_bytes(arch, sku, shape.gpu_memory_utilization, shape.tensor_parallel_size)
    kv_tokens = max(kv_bytes, 0) // kv_per_token
    max_len = shape.max_model_len or arch.max_position_embeddings
    tokens_per_request = min(workload.prompt_tokens + workload.output_tokens, max_len)
    blocks_per_request = math.ceil(tokens_per_request / KV_BLOCK_TOKENS)
    fit = (kv_tokens // KV_BLOCK_TOKENS) // blocks_per_request
    decode_s = workload.output_tokens / workload.decode_tokens_per_s
    min_timeout = round_up(ttft_budget_ms + decode_s * 1000, 1000)
    # A request may first wait in Azure's queue for one whole generation, then run its own.
    wanted = round_up(TIMEOUT_HEADROOM * AZURE_QUEUE_FACTOR * (ttft_budget_ms + decode_s * 1000), 1000)
    return CapacityPlan(
        model=arch.name,
        instance_type=sku.name,
        gpu_memory_bytes=shape.tensor_parallel_size * sku.gpu_memory_gb * GIB,
        weights_bytes=weights_bytes(arch),
        kv_bytes_per_token=kv_per_token,
        kv_cache_bytes=kv_bytes,
        kv_tokens=kv_tokens,
        max_model_len=max_len,
        model_max_position_embeddings=arch.max_position_embeddings,
        tokens_per_request=tokens_per_request,
        max_concurrent_sequences=fit,
        recommended_max_num_seqs=floor_power_of_two(min(fit, VLLM_MAX_NUM_SEQS_CAP)),
        recommended_max_concurrent_requests_per_instance=shape.max_num_seqs,
        azure_admitted_per_instance=AZURE_QUEUE_FACTOR * shape.max_concurrent_requests_per_instance,
        decode_seconds=decode_s,
        min_request_timeout_ms=min_timeout,
        recommended_request_timeout_ms=min(wanted, MAX_REQUEST_TIMEOUT_MS),
        model_load_seconds=workload.model_load_seconds,
        recommended_probe_window_s=math.ceil(PROBE_HEADROOM * workload.model_load_seconds),
    )
