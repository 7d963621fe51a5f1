"""The build context: what ACR Tasks builds, and the hash that decides whether it must build at all.

The context is ``docker/`` with the Dockerfile rendered from settings (``tasks.plan.specs``), or a
hand-written ``R1_DOCKERFILE`` with its own folder. Its hash covers every file's path and bytes, so a
changed Dockerfile line, base digest or copied file is a new build and nothing else is. The tarball is
deterministic too (sorted names, no times, no owners): the same context uploads the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tasks.plan.specs import render_dockerfile
from tasks.settings import REPO_ROOT, Settings

REPOSITORY = "r1-vllm"  # the image's repository in the workspace's registry
DOCKERFILE = "Dockerfile"
DOCKER_DIR = REPO_ROOT / "docker"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE | re.MULTILINE)


class ContextError(ValueError):
    """The context cannot be read (a missing folder, an unreadable file): invalid input."""


@dataclass(frozen=True)
class BuildContext:
    files: dict[str, bytes]  # context-relative POSIX path -> bytes, the Dockerfile included
    hash: str  # sha256 hex over sorted (path, bytes)
    base_image: str  # the last FROM: the final stage's base

    @property
    def tag(self) -> str:
        """The image tag a build of this context pushes: the hash, short (ACR tags are for people)."""
        return self.hash[:12]


def is_pinned(image: str) -> bool:
    return bool(DIGEST.search(image))


def base_image(dockerfile: str) -> str:
    """The final stage's base (the last ``FROM``), or '' when there is none."""
    found = _FROM.findall(dockerfile)
    return found[-1] if found else ""


def context_hash(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        data = files[path]
        h.update(f"{path}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _read_folder(folder: Path, skip: str | None) -> dict[str, bytes]:
    if not folder.is_dir():
        raise ContextError(f"build context {folder} is not a folder")
    try:
        return {p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(folder.rglob("*")) if p.is_file() and p.name != skip}
    except OSError as err:
        raise ContextError(f"cannot read the build context {folder}: {err.strerror}") from None


def build_context(settings: Settings, docker_dir: Path = DOCKER_DIR) -> BuildContext:
    """``R1_DOCKERFILE`` and its folder, or ``docker_dir`` with the Dockerfile rendered from settings."""
    if settings.dockerfile is not None:
        folder = settings.dockerfile.parent
        files = {**_read_folder(folder, settings.dockerfile.name), DOCKERFILE: settings.dockerfile.read_bytes()}
    else:
        files = {**_read_folder(docker_dir, DOCKERFILE), DOCKERFILE: render_dockerfile(settings).encode()}
    return BuildContext(files, context_hash(files), base_image(files[DOCKERFILE].decode(errors="replace")))


def tarball(ctx: BuildContext) -> bytes:
    """The context as a reproducible tar.gz (what ``az acr build`` uploads)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(ctx.files):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(ctx.files[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(ctx.files[path]))
    return gzip.compress(raw.getvalue(), mtime=0)
