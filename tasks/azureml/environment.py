"""The seed's Azure ML environment, pinned to a built image's digest: thin calls of azure-ai-ml.

Image-only (no build context, no storage leg): Azure ML never builds it lazily, so what a deployment
runs is exactly the digest ACR Tasks reported. Each version carries the build context's hash, which is
how a later run finds a build of the same context instead of building again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.ai.ml.entities import Environment
from azure.core.exceptions import ResourceNotFoundError

from tasks.plan.specs import ENVIRONMENT_NAME, inference_config

CONTEXT_HASH_TAG = "context_hash"


@dataclass(frozen=True)
class Registered:
    image: str
    version: str

    @property
    def reference(self) -> str:
        return f"{ENVIRONMENT_NAME}:{self.version}"


def find_build(ml: Any, context_hash: str) -> Registered | None:
    """The newest environment version registered for a build of this context, if any."""
    try:
        versions = list(ml.environments.list(name=ENVIRONMENT_NAME))
    except ResourceNotFoundError:
        return None
    found = [e for e in versions if (e.tags or {}).get(CONTEXT_HASH_TAG) == context_hash and e.image]
    newest = max(found, key=lambda e: _number(e.version), default=None)
    return Registered(newest.image, newest.version) if newest else None


def register(ml: Any, image: str, tags: dict[str, str]) -> Registered:
    """A new version (the next integer) pinned to ``image``."""
    try:
        taken = [_number(e.version) for e in ml.environments.list(name=ENVIRONMENT_NAME)]
    except ResourceNotFoundError:
        taken = []
    version = str(max(taken, default=0) + 1)
    ml.environments.create_or_update(Environment(name=ENVIRONMENT_NAME, version=version, image=image, tags=tags,
                                                 inference_config=inference_config()))
    return Registered(image, version)


def _number(version: str | None) -> int:
    return int(version) if version and version.isdigit() else 0
