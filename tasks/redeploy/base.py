"""The tracked upstream base, brought into the workspace's own registry: builds never pull from a public hub."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError

from tasks.azureml import registry
from tasks.redeploy.inputs import UpstreamBase, current_digest
from tasks.redeploy.upstream_registry import NotUpstream
from tasks.redaction import redact
from tasks.rollout.steps import Refused
from tasks.settings import Settings


def import_base(ml: Any, acr: Any, s: Settings, base: UpstreamBase) -> str:
    """``<login server>/<repository>@sha256:..``: the workspace registry's copy of ``base``, imported by the digest
    read upstream first, so the copy is exactly what was checked. A source the registry refuses is refused."""
    try:
        digest = current_digest(s, base)
    except NotUpstream as err:
        raise Refused(f"R1_UPSTREAM_BASE={base.registry}/{base.reference}: {err}") from None
    reg = registry.workspace_registry(ml, acr, s.workspace)
    try:
        registry.import_image(acr, reg, base.registry, f"{base.repository}@{digest}", base.reference)
    except HttpResponseError as err:
        if err.status_code and 400 <= err.status_code < 500 and err.status_code not in (401, 403, 429):
            message = err.error.message if err.error else str(err).splitlines()[0]
            raise Refused(f"R1_UPSTREAM_BASE={base.registry}/{base.reference}: the import was refused: "
                          f"{redact(message)}") from None
        raise
    return f"{reg.login_server}/{base.repository}@{digest}"
