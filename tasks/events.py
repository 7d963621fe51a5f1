"""Prefect events about an endpoint: what automations in prefect.yaml hang on.

Every event names the endpoint as its resource (``r1.endpoint.<name>``), so a trigger can match one
endpoint or all of them; labels say what a trigger may need to filter on. Payloads hold no secrets.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

RESOURCE_PREFIX = "r1.endpoint."


def endpoint_resource(endpoint: str, **labels: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{RESOURCE_PREFIX}{endpoint}", "prefect.resource.name": endpoint,
            **{f"r1.{k.replace('_', '-')}": v for k, v in labels.items()}}


def emit(event: str, endpoint: str, payload: dict[str, Any], **labels: str) -> None:
    """Emit ``event`` (e.g. ``r1.guard.breach``) about ``endpoint``; without a Prefect API it is dropped."""
    emit_event(event=event, resource=endpoint_resource(endpoint, **labels), payload=payload)
