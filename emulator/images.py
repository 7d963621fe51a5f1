"""Image pull: which local engine stands in for a container image.

An image on the emulator's registry (``r1emulatoracr.azurecr.io/...``) runs only if the registry holds it
(by digest or tag), on the engine its build recorded (``emulator/registry.py``). For any other registry
the repository part decides (registry, tag and digest do not):
    .../fake-engine, .../fake-vllm-openai -> emulator.engines.fake  (fast deterministic stand-in)
    .../r1-vllm, .../vllm-openai          -> emulator.engines.vllm  (the real vLLM OpenAI server)
Anything else cannot be "pulled": the deployment fails as Azure's does on an image pull failure.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Protocol

InstanceCommand = Callable[[int, Mapping[str, str]], tuple[list[str], dict[str, str]]]

ENGINES: dict[str, str] = {
    "fake-engine": "emulator.engines.fake",
    "fake-vllm-openai": "emulator.engines.fake",
    "r1-vllm": "emulator.engines.vllm",
    "vllm-openai": "emulator.engines.vllm",
}


class ImageError(Exception):
    """The image cannot be run here; the message reads like Azure's deployment error."""


class HeldImages(Protocol):
    """A registry the emulator serves: the engine each image it holds was built for."""

    login_server: str

    def engine_of(self, image: str) -> str | None: ...


def repository(image: str) -> str:
    """``myacr.azurecr.io/team/r1-vllm:1@sha256:..`` -> ``myacr.azurecr.io/team/r1-vllm``."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def engine_module(image: str, registry: HeldImages) -> str:
    if image.lower().startswith(registry.login_server + "/"):
        engine = registry.engine_of(image)
        if engine is None:
            raise ImageError(
                f"Failed to pull image '{image}': manifest unknown: the registry {registry.login_server} does not "
                "hold this image (no build pushed it). Check the image name and digest in the environment."
            )
        return engine
    repo = repository(image).rsplit("/", 1)[-1].lower()
    module = ENGINES.get(repo)
    if module is None:
        raise ImageError(
            f"Failed to pull image '{image}': the repository is not known to this registry "
            f"(the emulator runs images whose repository ends in one of {sorted(ENGINES)})."
        )
    return module


def instance_command(image: str, registry: HeldImages) -> InstanceCommand:
    """The engine's ``instance_command(port, env) -> (argv, extra_env)``."""
    module = engine_module(image, registry)
    try:
        return importlib.import_module(module).instance_command
    except (ImportError, AttributeError) as err:
        raise ImageError(f"Image '{image}' maps to engine {module}, which is not available: {err}") from None
