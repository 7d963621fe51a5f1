"""Teardown's steps: traffic to 0, deployments, the endpoint's autoscale settings, then the endpoint.

Each step reads the live state and removes what is still there, so a re-run after a kill finishes the job.
Model and environment assets are never touched: a later rollout registers nothing twice and can start again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from tasks.azureml.autoscale import autoscale_name
from tasks.azureml.deployment import delete_deployment
from tasks.azureml.endpoint import get_endpoint, set_traffic
from tasks.rollout.reconcile import COLOURS
from tasks.rollout.tags import IMAGE_TAG, MODEL_TAG

KEPT = "model and environment assets are kept (teardown deletes none); a rollout can start again from them"


def confirmation_problem(confirm: str, endpoint: str) -> str | None:
    """Teardown is on purpose only: ``confirm`` must name the endpoint the settings point at."""
    if confirm == endpoint:
        return None
    given = f"got {confirm!r}" if confirm else "none given"
    return f"confirm must equal the endpoint's name {endpoint!r} to tear it down ({given}); nothing was changed"


def zero_traffic(ml: Any, name: str) -> str:
    """Live and mirror traffic to 0 first: no request is routed to a deployment being deleted."""
    ep = get_endpoint(ml, name)
    live = {k: v for k, v in (ep.traffic or {}).items() if v}
    mirror = {k: v for k, v in (ep.mirror_traffic or {}).items() if v}
    if not live and not mirror:
        return "no traffic"
    set_traffic(ml, name, {}, {})
    return f"traffic {live} and mirror {mirror} set to 0"


def delete_deployments(ml: Any, name: str) -> list[dict[str, str | None]]:
    """Every deployment of the endpoint; returns what each ran (image, model), for the report."""
    gone = []
    for d in list(ml.online_deployments.list(name)):
        tags = d.tags or {}
        if delete_deployment(ml, name, d.name):
            gone.append({"deployment": d.name, "image": tags.get(IMAGE_TAG), "model": tags.get(MODEL_TAG)})
    return gone


def endpoint_autoscale(settings: Iterable[tuple[str, str | None]], endpoint: str, endpoint_id: str) -> list[str]:
    """The autoscale settings (name, target) that scale a deployment of this endpoint: by target, or by the
    rollout's naming (``autoscale_name``) for a setting whose deployment is already gone."""
    prefix = endpoint_id.lower().rstrip("/") + "/deployments/"
    ours = {autoscale_name(endpoint, colour) for colour in COLOURS}
    return sorted(n for n, target in settings if n in ours or (target or "").lower().startswith(prefix))


def delete_autoscale(monitor: Any, resource_group: str, endpoint: str, endpoint_id: str) -> list[str]:
    listed = monitor.autoscale_settings.list_by_resource_group(resource_group)
    names = endpoint_autoscale(((a.name, a.target_resource_uri) for a in listed), endpoint, endpoint_id)
    for n in names:
        with contextlib.suppress(ResourceNotFoundError):
            monitor.autoscale_settings.delete(resource_group, n)
    return names


def delete_endpoint(ml: Any, name: str) -> bool:
    """Delete and wait; False when it was already gone."""
    try:
        ml.online_endpoints.begin_delete(name).result()
        return True
    except ResourceNotFoundError:
        return False
