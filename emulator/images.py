"""The image -> engine table: which local engine stands in for a container image.

The repository part decides (registry, tag and digest do not):
    .../fake-engine            -> emulator.engines.fake  (fast deterministic stand-in)
    .../r1-vllm, .../vllm-openai -> emulator.engines.vllm  (the real vLLM OpenAI server)
Anything else cannot be "pulled": the deployment fails as Azure's does on an image pull failure.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

InstanceCommand = Callable[[int, Mapping[str, str]], tuple[list[str], dict[str, str]]]

ENGINES: dict[str, str] = {
    "fake-engine": "emulator.engines.fake",
    "r1-vllm": "emulator.engines.vllm",
    "vllm-openai": "emulator.engines.vllm",
}


class ImageError(Exception):
    """The image cannot be run here; the message reads like Azure's deployment error."""


def repository(image: str) -> str:
    """``myacr.azurecr.io/team/r1-vllm:1@sha256:..`` -> ``myacr.azurecr.io/team/r1-vllm``."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def engine_module(image: str) -> str:
    repo = repository(image).rsplit("/", 1)[-1].lower()
    module = ENGINES.get(repo)
    if module is None:
        raise ImageError(
            f"Failed to pull image '{image}': the repository is not known to this registry "
            f"(the emulator runs images whose repository ends in one of {sorted(ENGINES)})."
        )
    return module


def instance_command(image: str) -> InstanceCommand:
    """The engine's ``instance_command(port, env) -> (argv, extra_env)``."""
    module = engine_module(image)
    try:
        return importlib.import_module(module).instance_command
    except (ImportError, AttributeError) as err:
        raise ImageError(f"Image '{image}' maps to engine {module}, which is not available: {err}") from None
