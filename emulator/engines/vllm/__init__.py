"""The emulator's real engine: vLLM's OpenAI server from its own venv, serving a generated tiny model.

This is the local stand-in for the serving image (``docker/Dockerfile``): an instance runs the
image's entrypoint, ``python -m vllm.entrypoints.openai.api_server --model <path> $VLLM_ARGS``,
with the deployment's environment variables. The model path inside the image (``MODEL_PATH``) means
nothing on this machine; the emulator "mounts" the generated tiny model in its place.
Build the engine first: ``.venv/bin/python -m emulator.engines.vllm build``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from emulator.engines.vllm.layout import BUILD_COMMAND, EngineLayout, engine_layout

__all__ = ["IMAGE_ENV", "LOCAL_PROFILE", "EngineNotBuilt", "instance_command", "ready_layout"]

# What the image sets with ENV: offline, no telemetry, and a small CPU KV cache (GiB). The
# deployment's own variables win, as they do over an image's ENV on Azure.
IMAGE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "PYTHONUNBUFFERED": "1",  # log lines reach the deployment's logs as they happen
}

# The settings under which production's vLLM arguments run on a 2-core CPU machine with the tiny
# model (R1_VLLM__* variables, rendered into VLLM_ARGS by the same code as for Azure). On the CPU
# backend --gpu-memory-utilization is the share of host memory that must be free at start (0.9
# cannot be, with other processes on the machine); --enforce-eager skips a ~45 s graph compile.
LOCAL_PROFILE = {
    "R1_VLLM__GPU_MEMORY_UTILIZATION": "0.2",
    "R1_VLLM__ENFORCE_EAGER": "true",
}

# The runtime decides where an instance listens and the engine decides what it serves.
RESERVED_ARGS = ("--host", "--port", "--model")


class EngineNotBuilt(RuntimeError):
    """The engine venv or tiny model is missing or stale; the message names the command to fix it."""


def ready_layout() -> EngineLayout:
    """The engine's layout, provided it is built and current; otherwise say how to build it."""
    layout = engine_layout()
    problems = layout.problems()
    if problems:
        raise EngineNotBuilt("; ".join(problems) + f". Build it with: {BUILD_COMMAND}")
    return layout


def instance_command(port: int, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment additions that start one instance listening on 127.0.0.1:``port``.

    ``env`` is the deployment's environment (``MODEL_NAME``, ``VLLM_ARGS``, ...). The returned
    environment is the image's ENV with the deployment's values already laid over it, so the
    caller may merge it over ``env`` or under it with the same result.
    """
    layout = ready_layout()
    argv = [
        str(layout.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(layout.model),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]
    if env.get("MODEL_NAME"):
        argv += ["--served-model-name", env["MODEL_NAME"]]
    argv += vllm_args(env.get("VLLM_ARGS", ""))
    image_env = IMAGE_ENV | {"VLLM_CACHE_ROOT": str(layout.cache)}
    return argv, {name: env.get(name, value) for name, value in image_env.items()}


def vllm_args(value: str) -> list[str]:
    """``$VLLM_ARGS`` split as the image's shell would; flags the emulator owns are refused."""
    try:
        args = shlex.split(value)
    except ValueError as err:
        raise ValueError(f"VLLM_ARGS cannot be parsed ({err}): {value!r}") from None
    clashes = [a for a in args if a.split("=", 1)[0] in RESERVED_ARGS]
    if clashes:
        raise ValueError(
            f"VLLM_ARGS must not set {', '.join(clashes)}: the deployment's inference_config "
            "decides where the server listens and the model is mounted by the environment"
        )
    return args
