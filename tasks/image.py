"""The serving image: the one step where the two targets differ, hidden behind ``resolve`` and ``provide``.

Azure: the image must already exist in the workspace's registry and be pinned by digest (build it from
``docker/`` with ``az ml environment create -f deployments/environment.yml``, then set ``R1_IMAGE`` to
the digest it reports). Local: the emulator's engines are the "registry"; a tag such as
``local/fake-engine:1`` is pinned to the digest of the engine's own sources, and the real vLLM engine's
virtual environment and tiny model are built (cached) before a deployment asks for them.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from tasks.settings import REPO_ROOT, Settings

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


class ImageError(RuntimeError):
    """The image cannot be used; the message says what to do."""


def is_pinned(image: str) -> bool:
    return bool(DIGEST.search(image))


def _local_engine(image: str) -> str:
    from emulator.images import ImageError as EmulatorImageError, engine_module

    try:
        return engine_module(image)
    except EmulatorImageError as err:
        raise ImageError(str(err)) from None


def _sources_digest(module: str) -> str:
    package = REPO_ROOT / Path(*module.split("."))
    files = sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in {".py", ".lock"})
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def resolve(settings: Settings) -> str:
    """The digest-pinned reference the deployment will use; cheap, no build."""
    image = settings.image
    if settings.target == "azure":
        if not is_pinned(image):
            raise ImageError(
                f"R1_IMAGE={image!r} is not pinned by digest. Build docker/ with "
                "`az ml environment create -f deployments/environment.yml` and set R1_IMAGE to "
                "<registry>/<repository>@sha256:<digest>."
            )
        return image
    module = _local_engine(image)
    if is_pinned(image):
        return image
    from emulator.images import repository

    return f"{repository(image)}@sha256:{_sources_digest(module)}"


def provide(settings: Settings, image: str) -> str:
    """Make sure the image can be run; returns a line for the log."""
    if settings.target == "azure":
        return f"using pre-built image {image}"
    module = _local_engine(image)
    if module == "emulator.engines.vllm":
        subprocess.run([sys.executable, "-m", "emulator.engines.vllm", "build"], cwd=REPO_ROOT, check=True,
                       stdout=sys.stderr)
        return f"local vLLM engine ready for {image}"
    return f"local engine {module} serves {image}"
