"""The gateway as users meet it: behind the real emulator, configured through the unmodified SDK,
serving fake-engine instances the runtime started from deployment specs."""

from __future__ import annotations

import ssl
import uuid
from collections import Counter

import httpx
import pytest
from azure.ai.ml.entities import (
    Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, OnlineRequestSettings, ProbeSettings,
)

from tasks import clients

CHAT = {"messages": [{"role": "user", "content": "Which is better, summer or winter?"}], "max_tokens": 32}


@pytest.fixture(scope="module")
def rollout(emulator, tmp_path_factory):
    """One key endpoint with blue, green and a red deployment whose engine fails every request."""
    ml = clients.ml_client(emulator.settings())
    name = f"gw-{uuid.uuid4().hex[:10]}"
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
    routes = {"port": 8000, "path": "/health"}
    for colour, env in (("blue", {}), ("green", {}), ("red", {"FAKE_ENGINE_ERROR_RATE": "1"})):
        ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
            name=colour, endpoint_name=name, instance_type="Standard_NC24ads_A100_v4", instance_count=1,
            environment=Environment(image="local/fake-engine:1", inference_config={
                "liveness_route": routes, "readiness_route": routes, "scoring_route": {"port": 8000, "path": "/"}}),
            request_settings=OnlineRequestSettings(request_timeout_ms=30_000, max_concurrent_requests_per_instance=8),
            readiness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=15),
            liveness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=3),
            environment_variables=env,
        )).result()
    endpoint = ml.online_endpoints.get(name)
    key = ml.online_endpoints.get_keys(name).primary_key
    verify = ssl.create_default_context(cafile=str(clients.data_plane_ca(emulator.settings())))
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, verify=verify, timeout=30, trust_env=False) as http:
        yield ml, endpoint, http
    ml.online_endpoints.begin_delete(name).result()


def set_traffic(ml, endpoint, traffic: dict[str, int], mirror: dict[str, int] | None = None):
    endpoint = ml.online_endpoints.get(endpoint.name)
    endpoint.traffic, endpoint.mirror_traffic = traffic, mirror or {}
    return ml.online_endpoints.begin_create_or_update(endpoint).result()


def test_sdk_traffic_split_is_what_the_gateway_serves(rollout):
    ml, endpoint, http = rollout
    set_traffic(ml, endpoint, {"blue": 70, "green": 30, "red": 0})
    served = Counter(http.post(endpoint.scoring_uri, json=CHAT).headers["azureml-model-deployment"]
                     for _ in range(300))
    assert set(served) == {"blue", "green"}
    assert 0.62 <= served["blue"] / 300 <= 0.78


def test_mirror_to_a_failing_deployment_never_reaches_callers(rollout):
    ml, endpoint, http = rollout
    set_traffic(ml, endpoint, {"blue": 100, "green": 0, "red": 0}, mirror={"red": 50})
    answers = [http.post(endpoint.scoring_uri, json=CHAT) for _ in range(30)]
    assert {(a.status_code, a.headers["azureml-model-deployment"]) for a in answers} == {(200, "blue")}
    assert "choices" in answers[0].json()


def test_a_failing_engine_is_424_with_its_status(rollout):
    _, endpoint, http = rollout
    answer = http.post(endpoint.scoring_uri, json=CHAT, headers={"azureml-model-deployment": "red"})
    assert answer.status_code == 424
    assert answer.headers["ms-azureml-model-error-statuscode"] == "500"
