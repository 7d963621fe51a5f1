"""The few numbers about a transformer that decide how it fits on a GPU.

The capacity planner needs the parameter count (weights memory) and the attention shape (KV cache
bytes per token). They come either from built-in data for the served model or from the model's own
Hugging Face ``config.json``, so a different checkpoint is planned from its real shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelArch:
    name: str
    params: int
    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    max_position_embeddings: int


def llama_params(
    vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
    head_dim: int, tied_embeddings: bool,
) -> int:
    """Exact parameter count of a Llama-style decoder (GQA attention, gated MLP, RMSNorm, no biases)."""
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o + k, v
    mlp = 3 * hidden * intermediate  # gate, up, down
    per_layer = attention + mlp + 2 * hidden  # two RMSNorm weights
    embeddings = vocab * hidden * (1 if tied_embeddings else 2)  # input embedding + lm_head
    return embeddings + layers * per_layer + hidden  # final norm


# DeepSeek-R1-Distill-Llama-8B is Llama-3.1-8B's architecture (its config.json, bf16).
LLAMA_3_1_8B = ModelArch(
    name="Llama-3.1-8B",
    params=llama_params(128_256, 4096, 14_336, 32, 32, 8, 128, tied_embeddings=False),
    layers=32,
    kv_heads=8,
    head_dim=128,
    dtype_bytes=2,
    max_position_embeddings=131_072,
)

BUILT_IN = {
    "deepseek-ai/deepseek-r1-distill-llama-8b": LLAMA_3_1_8B,
    "meta-llama/llama-3.1-8b": LLAMA_3_1_8B,
    "meta-llama/llama-3.1-8b-instruct": LLAMA_3_1_8B,
}


class ModelConfigError(ValueError):
    """A config.json the planner cannot read (missing keys, wrong types)."""


def built_in_arch(model_id: str) -> ModelArch | None:
    return BUILT_IN.get(model_id.lower())


def arch_from_hf_config(config: dict, name: str = "config.json") -> ModelArch:
    """Read a Llama-family ``config.json`` (the keys vLLM itself reads)."""
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads", heads))
        head_dim = int(config.get("head_dim") or hidden // heads)
        layers = int(config["num_hidden_layers"])
        params = llama_params(
            vocab=int(config["vocab_size"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            layers=layers,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        )
        dtype = str(config.get("torch_dtype", "bfloat16"))
        dtype_bytes = DTYPE_BYTES[dtype]
        max_pos = int(config.get("max_position_embeddings", 4096))
    except KeyError as err:
        raise ModelConfigError(f"{name}: missing or unsupported key {err}") from None
    except (TypeError, ValueError) as err:
        raise ModelConfigError(f"{name}: {err}") from None
    return ModelArch(name, params, layers, kv_heads, head_dim, dtype_bytes, max_pos)


def load_arch(path: Path) -> ModelArch:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelConfigError(f"{path}: {err}") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"{path}: expected a JSON object")
    return arch_from_hf_config(config, name=str(path))
