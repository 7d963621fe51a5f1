"""The serving image: the registry the client factory hands out decides how an image is pinned and made ready.

A rollout never asks which target it runs on; it asks ``clients.images(settings)`` for an ``ImageSource``
and calls ``resolve`` (the digest-pinned reference the deployment will use; cheap) and ``provide``
(make sure the image can run; may build). On Azure the image must already sit in the workspace's
registry, pinned by digest (``PrebuiltImages``); the emulator's source lives with the factory.
"""

from __future__ import annotations

import re
from typing import Protocol

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


class ImageError(RuntimeError):
    """The image cannot be used; the message says what to do."""


class ImageSource(Protocol):
    def resolve(self, image: str) -> str:
        """The digest-pinned reference for ``image``, or ``ImageError``."""

    def provide(self, image: str) -> str:
        """Make the pinned ``image`` runnable; a line for the log."""


def is_pinned(image: str) -> bool:
    return bool(DIGEST.search(image))


class PrebuiltImages:
    """A registry that already holds the image: only digest-pinned references are accepted."""

    def resolve(self, image: str) -> str:
        if not is_pinned(image):
            raise ImageError(
                f"R1_IMAGE={image!r} is not pinned by digest. Build docker/ with "
                "`az ml environment create -f deployments/environment.yml` and set R1_IMAGE to "
                "<registry>/<repository>@sha256:<digest>."
            )
        return image

    def provide(self, image: str) -> str:
        return f"using pre-built image {image}"
