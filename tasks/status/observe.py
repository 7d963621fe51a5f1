"""What the endpoint is now, read-only: deployments, traffic, autoscale, the lock and the last rollout's outcome.

Everything comes from Azure itself (the endpoint, its deployments and their tags, Azure Monitor's autoscale
settings), so ``status`` says the same from any machine. Nothing read here is a secret.
"""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from tasks.azureml.autoscale import autoscale_name
from tasks.azureml.deployment import state_name
from tasks.azureml.endpoint import get_endpoint
from tasks.rollout import lock, tags
from tasks.rollout.reconcile import SPEC_HASH_TAG

_ENVIRONMENT_ID = re.compile(r"environments/([^/]+)/versions/([^/]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Scaling:
    minimum: int
    maximum: int
    default: int
    enabled: bool

    def line(self) -> str:
        return f"{self.minimum}-{self.maximum} (default {self.default}){'' if self.enabled else ', disabled'}"


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    image: str | None
    spec_hash: str | None
    instance_count: int | None
    provisioning_state: str
    traffic: int
    mirror: int
    autoscale: Scaling | None

    def row(self) -> dict[str, Any]:
        return {"deployment": self.name, "live %": self.traffic, "mirror %": self.mirror, "image": self.image or "-",
                "spec hash": self.spec_hash or "-", "instances": self.instance_count,
                "state": self.provisioning_state, "autoscale": self.autoscale.line() if self.autoscale else "none"}


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    exists: bool
    auth_mode: str | None = None
    deployments: list[DeploymentStatus] = field(default_factory=list)
    lock: str | None = None  # who holds the rollout lock, in words
    last_rollout: dict[str, Any] | None = None

    @property
    def traffic(self) -> dict[str, int]:
        return {d.name: d.traffic for d in self.deployments if d.traffic}

    @property
    def mirror(self) -> dict[str, int]:
        return {d.name: d.mirror for d in self.deployments if d.mirror}

    def record(self) -> dict[str, Any]:
        return {"endpoint": self.name, "exists": self.exists, "auth_mode": self.auth_mode,
                "traffic": self.traffic, "mirror": self.mirror, "deployments": [asdict(d) for d in self.deployments],
                "lock": self.lock, "last_rollout": self.last_rollout}


def holder_line(value: str | None, now: float | None = None) -> str | None:
    """The lock holder in words (stale ones say so: the next rollout takes over), or None when unlocked."""
    holder = lock.decode(value)
    if holder is None:
        return None if not value else "an unreadable lock value (protects nothing)"
    expires = datetime.fromtimestamp(holder.expires, UTC).isoformat(timespec="seconds")
    stale = " (stale: the next rollout takes over)" if lock.is_stale(holder, now) else ""
    return f"run {holder.run} on {holder.host} (pid {holder.pid}), lease until {expires}{stale}"


def environment_image(ml: Any, environment: Any) -> str | None:
    """The image a deployment's environment pins: inline, or read from its registered version."""
    if getattr(environment, "image", None):
        return environment.image
    found = _ENVIRONMENT_ID.search(str(environment or ""))
    if not found:
        return None
    with suppress(ResourceNotFoundError):
        return ml.environments.get(found[1], version=found[2]).image
    return None


def scaling(monitor: Any, resource_group: str, endpoint: str, deployment: str) -> Scaling | None:
    try:
        setting = monitor.autoscale_settings.get(resource_group, autoscale_name(endpoint, deployment))
    except ResourceNotFoundError:
        return None
    capacity = setting.profiles[0].capacity
    return Scaling(int(capacity.minimum), int(capacity.maximum), int(capacity.default), bool(setting.enabled))


def observe(ml: Any, monitor: Any, resource_group: str, name: str) -> EndpointStatus:
    endpoint = get_endpoint(ml, name)
    if endpoint is None:
        return EndpointStatus(name, False)
    traffic, mirror, endpoint_tags = endpoint.traffic or {}, endpoint.mirror_traffic or {}, endpoint.tags or {}
    deployments = [
        DeploymentStatus(
            d.name, (d.tags or {}).get(tags.IMAGE_TAG) or environment_image(ml, d.environment),
            (d.tags or {}).get(SPEC_HASH_TAG), d.instance_count, state_name(d.provisioning_state),
            int(traffic.get(d.name, 0)), int(mirror.get(d.name, 0)), scaling(monitor, resource_group, name, d.name))
        for d in sorted(ml.online_deployments.list(name), key=lambda d: d.name)
    ]
    last = tags.last_rollout(endpoint_tags)
    return EndpointStatus(name, True, endpoint.auth_mode, deployments, holder_line(endpoint_tags.get(lock.LOCK_TAG)),
                          asdict(last) if last else None)
