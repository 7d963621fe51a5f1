"""The tracked upstream base, brought into the workspace's own registry: builds never pull from a public hub."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError

from tasks.azureml import registry
from tasks.redeploy.inputs import UpstreamBase, digest_of
from tasks.redaction import redact
from tasks.rollout.steps import Refused
from tasks.settings import Settings


def import_base(ml: Any, acr: Any, s: Settings, base: UpstreamBase) -> str:
    """``<login server>/<repository>@sha256:..``: the workspace registry's copy of ``base``, pinned by the digest
    imported. A source the registry cannot import (an unknown tag) is refused: nothing has changed yet."""
    reg = registry.workspace_registry(ml, acr, s.workspace)
    try:
        digest = registry.import_image(acr, reg, base.registry, base.reference, base.reference)
    except HttpResponseError as err:
        if err.status_code and 400 <= err.status_code < 500 and err.status_code not in (401, 403, 429):
            message = err.error.message if err.error else str(err).splitlines()[0]
            raise Refused(f"R1_UPSTREAM_BASE={base.registry}/{base.reference}: the import was refused: "
                          f"{redact(message)}") from None
        raise
    if not digest_of(digest):
        raise RuntimeError(f"the registry imported {base.reference} but did not report its digest; "
                           "read it from the registry (az acr manifest list-metadata) and pin R1_BASE_IMAGE")
    return f"{reg.login_server}/{base.repository}@{digest}"
