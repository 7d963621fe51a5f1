"""Azure's rules, enforced by the emulator with ARM's error shape: one negative test per rule,
each asserting the SDK raises HttpResponseError with a message that says what is wrong."""

from __future__ import annotations

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint, OnlineRequestSettings
from azure.core.exceptions import HttpResponseError

from tasks import clients

UNKNOWN_IMAGE = "myacr.azurecr.io/not-an-engine:1"


@pytest.fixture(scope="module")
def shared(emulator):
    """One endpoint with two ready fake-engine deployments (blue live, green at 0 %)."""
    import uuid

    from azure.ai.ml.entities import Environment, ManagedOnlineDeployment, ProbeSettings

    ml = clients.ml_client(emulator.settings())
    name = f"rules-{uuid.uuid4().hex[:8]}"
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    routes = {"port": 8000, "path": "/health"}
    for dep in ("blue", "green"):
        ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
            name=dep, endpoint_name=name, instance_type="Standard_NC24ads_A100_v4", instance_count=1,
            environment=Environment(image="local/fake-engine:1", inference_config={
                "liveness_route": routes, "readiness_route": routes, "scoring_route": {"port": 8000, "path": "/"}}),
            readiness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=15),
        )).result()
    with pytest.raises(HttpResponseError, match="ImagePullFailure"):  # exists, failed: enough for traffic rules
        ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
            name="red", endpoint_name=name, instance_type="Standard_NC24ads_A100_v4", instance_count=1,
            environment=Environment(image=UNKNOWN_IMAGE))).result()
    ep = ml.online_endpoints.get(name)
    ep.traffic = {"blue": 100}
    ml.online_endpoints.begin_create_or_update(ep).result()
    yield ml, name
    ml.online_endpoints.begin_delete(name).result()


def _update_traffic(ml, name, traffic, mirror=None):
    ep = ml.online_endpoints.get(name)
    ep.traffic = traffic
    ep.mirror_traffic = mirror or {}
    return ml.online_endpoints.begin_create_or_update(ep).result()


@pytest.fixture
def workspace_arm(emulator, arm):
    """Raw ARM calls under the workspace, for rules the SDK also checks locally (so the server's check is
    what is tested): ``workspace_arm(method, path, body=None)``."""
    settings = emulator.settings()
    ws = (f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}"
          f"/providers/Microsoft.MachineLearningServices/workspaces/{settings.workspace}")

    def call(method: str, path: str, body: dict | None = None) -> httpx.Response:
        return arm.request(method, ws + path, json=body)

    return call


@pytest.mark.parametrize("bad", ["a" * 33, "ab", "1abc", "ab--cd", "abc-", "ab_cd"])
def test_endpoint_name_rule(workspace_arm, bad):
    answer = workspace_arm("PUT", f"/onlineEndpoints/{bad}", {"properties": {"authMode": "Key"}})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "InvalidResourceName"
    assert "3-32 characters long, start with a letter" in answer.json()["error"]["message"]
    assert workspace_arm("GET", f"/onlineEndpoints/{bad}").status_code == 404


def test_no_endpoint_in_a_workspace_the_emulator_does_not_serve(emulator, shared):
    """One workspace per emulator, so an endpoint name is unique in its region by construction: another
    workspace is missing (ARM's 404), and nothing can be created in it."""
    _, name = shared
    other_workspace = clients.ml_client(emulator.settings(workspace="ws-other"))
    with pytest.raises(HttpResponseError, match="ResourceNotFound") as err:
        other_workspace.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    assert err.value.status_code == 404


def test_deployment_name_rule(workspace_arm, shared):
    _, name = shared
    answer = workspace_arm("PUT", f"/onlineEndpoints/{name}/deployments/{'b' * 33}",
                           {"sku": {"capacity": 1}, "properties": {"instanceType": "Standard_NC24ads_A100_v4"}})
    assert answer.status_code == 400
    assert "Invalid deployment name" in answer.json()["error"]["message"]


def test_traffic_must_sum_to_0_or_100(shared):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="sum to 0 or 100; they sum to 60"):
        _update_traffic(ml, name, {"blue": 50, "green": 10})


def test_traffic_names_only_existing_deployments(shared):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="'nope', which does not exist"):
        _update_traffic(ml, name, {"blue": 90, "nope": 10})


def test_mirror_at_most_50_percent(shared):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="maximum is 50%"):
        _update_traffic(ml, name, {"blue": 100}, {"green": 60})


def test_mirror_never_to_a_deployment_with_live_traffic(shared):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="both live and mirror"):
        _update_traffic(ml, name, {"blue": 90, "green": 10}, {"green": 10})


def test_mirror_to_one_deployment_only(shared):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="only one deployment"):
        _update_traffic(ml, name, {"blue": 100}, {"green": 10, "red": 10})


def test_valid_traffic_and_mirror_are_accepted(shared):
    ml, name = shared
    ep = _update_traffic(ml, name, {"blue": 100}, {"green": 20})
    assert ep.mirror_traffic == {"green": 20}
    ep = _update_traffic(ml, name, {"blue": 100})
    assert ep.mirror_traffic == {}


def test_deployment_with_live_traffic_cannot_be_deleted(shared):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="has live traffic"):
        ml.online_deployments.begin_delete("blue", name).result()
    assert ml.online_deployments.get("blue", name).provisioning_state.lower() == "succeeded"


def test_request_timeout_at_most_180000_ms(shared, fake_deployment):
    ml, name = shared
    dep = fake_deployment(name, "slowpoke", request_settings=OnlineRequestSettings(request_timeout_ms=180_001))
    with pytest.raises(HttpResponseError, match="180000 ms"):
        ml.online_deployments.begin_create_or_update(dep).result()


@pytest.mark.parametrize("count", [0, 51])
def test_instance_count_1_to_50(shared, fake_deployment, count):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="between 1 and 50"):
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "many", instance_count=count)).result()


def test_known_instance_types_only(shared, fake_deployment):
    ml, name = shared
    with pytest.raises(HttpResponseError, match="Standard_DS3_v2' is not supported"):
        ml.online_deployments.begin_create_or_update(
            fake_deployment(name, "cpu", instance_type="Standard_DS3_v2")).result()


def test_failed_rules_change_nothing(shared):
    ml, name = shared
    ep = ml.online_endpoints.get(name)
    assert ep.traffic == {"blue": 100, "green": 0, "red": 0} and ep.mirror_traffic == {}
    assert sorted(d.name for d in ml.online_deployments.list(name)) == ["blue", "green", "red"]


def test_at_most_20_deployments_per_endpoint(ml, endpoint, workspace_arm, fake_deployment):
    """Twenty deployments through the REST surface (unpullable image: no processes), the 21st via the SDK."""
    name = endpoint
    env_id = "/environments/unpullable/versions/1"
    assert workspace_arm("PUT", env_id, {"properties": {"image": UNKNOWN_IMAGE}}).status_code in (200, 201)
    env_id = ml.environments.get("unpullable", version="1").id
    for i in range(20):
        body = {"location": "swedencentral", "sku": {"name": "Default", "capacity": 1},
                "properties": {"environmentId": env_id, "instanceType": "Standard_NC24ads_A100_v4",
                               "endpointComputeType": "Managed"}}
        answer = workspace_arm("PUT", f"/onlineEndpoints/{name}/deployments/d{i:02d}", body)
        assert answer.status_code == 201, answer.text
    with pytest.raises(HttpResponseError, match="at most 20 deployments"):
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "d20")).result()


def test_regional_gpu_quota_fits_two_single_a100_deployments_not_three(fresh_emulator, unique_name, fake_deployment):
    ml = clients.ml_client(fresh_emulator.settings())
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    for dep in ("blue", "green"):  # unpullable: they fail fast but hold their quota, as on Azure
        with pytest.raises(HttpResponseError, match="ImagePullFailure"):
            ml.online_deployments.begin_create_or_update(fake_deployment(name, dep, image=UNKNOWN_IMAGE)).result()
    with pytest.raises(HttpResponseError, match="Not enough quota available for Standard_NC24ads_A100_v4") as err:
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "red", image=UNKNOWN_IMAGE)).result()
    assert "Current usage/limit: 48/48" in str(err.value)
    with pytest.raises(HttpResponseError, match="OutOfQuota"):  # scaling up counts too
        ml.online_deployments.begin_create_or_update(
            fake_deployment(name, "blue", image=UNKNOWN_IMAGE, instance_count=2)).result()
    ml.online_deployments.begin_delete("green", name).result()
    with pytest.raises(HttpResponseError, match="ImagePullFailure"):  # room again
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "red", image=UNKNOWN_IMAGE)).result()
