"""What the guard tests share: two images, the latency spike the fake engine injects, guard limits, live load."""

from __future__ import annotations

from tasks import clients
from tasks.azureml.endpoint import scoring_base
from tasks.azureml.scoring import scoring_bearer
from tasks.loadtest.client import BackgroundLoad, Destination
from tasks.loadtest.spec import LoadSpec

IMAGE_A = "local/fake-engine@sha256:" + "c" * 64
IMAGE_B = "local/fake-engine@sha256:" + "d" * 64
SPIKE = {"spike_after": 400, "spike_ms": 1500}  # past anything the rollout's own gates and bakes send to green
GUARD = {"R1_GUARD__REQUEST_LATENCY_P95_MS": "800", "R1_GUARD__MIN_REQUESTS": "5"}


def live_load(ml, s, rate: float, seconds: float) -> BackgroundLoad:
    """Open-loop live traffic through the endpoint, as its users send it (no routing header)."""
    name = s.endpoint_name
    dest = Destination(scoring_base(ml.online_endpoints.get(name)),
                       scoring_bearer(lambda: ml.online_endpoints.get_keys(name)), None, clients.data_plane_ca(s))
    return BackgroundLoad(dest, LoadSpec(rate=rate, max_concurrency=64, duration_s=seconds, max_tokens=8,
                                         model=s.model_id, timeout_s=30))
