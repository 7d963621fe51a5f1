"""The read-only view the scoring gateway needs of the control plane and the runtime.

The control plane (ARM state) and the runtime (instance processes) implement this; the gateway
depends on nothing else, so it can route, authenticate and limit without knowing how state is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

AuthMode = Literal["Key", "AMLToken", "AADToken"]


@dataclass(frozen=True)
class DeploymentView:
    name: str
    max_concurrent_requests_per_instance: int
    request_timeout_ms: int
    instance_count: int
    # Base URLs ("http://127.0.0.1:PORT") of instances whose readiness probe passes right now.
    ready_instances: tuple[str, ...] = ()
    scoring_path: str = "/"  # the environment's inference_config.scoring_route.path


@dataclass(frozen=True)
class EndpointView:
    name: str
    auth_mode: AuthMode
    traffic: dict[str, int] = field(default_factory=dict)  # live split, sums to 0 or 100
    mirror_traffic: dict[str, int] = field(default_factory=dict)  # at most one entry, <= 50
    deployments: dict[str, DeploymentView] = field(default_factory=dict)


class ScoringDirectory(Protocol):
    def endpoint(self, name: str) -> EndpointView | None:
        """The endpoint as it is now (None if it does not exist); cheap enough to call per request."""

    def authorize(self, endpoint: str, bearer: str) -> bool:
        """True if ``bearer`` is valid for this endpoint under its auth mode (key, aml_token or aad_token)."""
