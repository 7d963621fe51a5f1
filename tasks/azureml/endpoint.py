"""Endpoint operations through azure-ai-ml, always read-modify-write.

The SDK's endpoint update is a full PUT, not a PATCH: building a fresh entity would silently reset
traffic, mirror traffic, tags and network settings. Every change here starts from a GET.
"""

from __future__ import annotations

from typing import Any

from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.core.exceptions import ResourceNotFoundError

from tasks.azureml.deployment import state_name
from tasks.rollout.reconcile import SPEC_HASH_TAG, LiveDeployment, LiveState
from tasks.settings import Settings
from tasks.plan.specs import build_endpoint

SCORING_SUFFIX = "/score"


def get_endpoint(ml: Any, name: str) -> ManagedOnlineEndpoint | None:
    try:
        return ml.online_endpoints.get(name)
    except ResourceNotFoundError:
        return None


def read_live_state(ml: Any, name: str) -> LiveState:
    """The endpoint's traffic and its deployments with their spec-hash tags, as the reconciler sees them."""
    endpoint = get_endpoint(ml, name)
    if endpoint is None:
        return LiveState(False)
    traffic, mirror = endpoint.traffic or {}, endpoint.mirror_traffic or {}
    deployments = {
        d.name: LiveDeployment(
            d.name,
            (d.tags or {}).get(SPEC_HASH_TAG),
            state_name(d.provisioning_state),
            traffic=int(traffic.get(d.name, 0)),
            mirror=int(mirror.get(d.name, 0)),
        )
        for d in ml.online_deployments.list(name)
    }
    return LiveState(True, deployments)


def owned_fields_differ(current: ManagedOnlineEndpoint, desired: ManagedOnlineEndpoint) -> list[str]:
    """The fields this project owns on the endpoint that differ from the settings."""
    changes = []
    if (current.auth_mode or "").lower() != (desired.auth_mode or "").lower():
        changes.append(f"auth_mode {current.auth_mode} -> {desired.auth_mode}")
    if (current.public_network_access or "enabled").lower() != (desired.public_network_access or "").lower():
        changes.append(f"public_network_access {current.public_network_access} -> {desired.public_network_access}")
    missing_tags = {k: v for k, v in (desired.tags or {}).items() if (current.tags or {}).get(k) != v}
    if missing_tags:
        changes.append(f"tags {sorted(missing_tags)}")
    return changes


def ensure_endpoint(ml: Any, settings: Settings) -> tuple[ManagedOnlineEndpoint, list[str]]:
    """Create the endpoint, or bring the fields we own in line; never touches traffic or other tags."""
    desired = build_endpoint(settings)
    current = get_endpoint(ml, settings.endpoint_name)
    if current is None:
        return ml.online_endpoints.begin_create_or_update(desired).result(), ["created"]
    changes = owned_fields_differ(current, desired)
    if not changes:
        return current, []
    current.auth_mode = desired.auth_mode
    current.public_network_access = desired.public_network_access
    current.description = current.description or desired.description
    current.tags = {**(current.tags or {}), **(desired.tags or {})}
    return ml.online_endpoints.begin_create_or_update(current).result(), changes


def set_traffic(ml: Any, name: str, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> None:
    """Set live (and mirror) traffic; deployments not named get 0 %."""
    endpoint = ml.online_endpoints.get(name)
    endpoint.traffic = {k: v for k, v in traffic.items() if v}
    endpoint.mirror_traffic = {k: v for k, v in (mirror or {}).items() if v}
    ml.online_endpoints.begin_create_or_update(endpoint).result()


def update_tags(ml: Any, name: str, set_tags: dict[str, str], remove: tuple[str, ...] = ()) -> None:
    endpoint = ml.online_endpoints.get(name)
    tags = {k: v for k, v in (endpoint.tags or {}).items() if k not in remove}
    endpoint.tags = {**tags, **set_tags}
    ml.online_endpoints.begin_create_or_update(endpoint).result()


def scoring_base(endpoint: ManagedOnlineEndpoint) -> str:
    """The server root clients call ``/v1/...`` under: the scoring URI without its ``/score`` route."""
    uri = (endpoint.scoring_uri or "").rstrip("/")
    if not uri:
        raise RuntimeError(f"endpoint {endpoint.name} has no scoring URI yet")
    return uri[: -len(SCORING_SUFFIX)] if uri.endswith(SCORING_SUFFIX) else uri
