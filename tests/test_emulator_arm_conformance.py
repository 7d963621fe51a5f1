"""ARM as Microsoft specifies it (Microsoft.MachineLearningServices 2025-12-01, Microsoft.Insights autoscale
2022-10-01): create-only fields, parents that do not exist, api-versions, PATCH / skus / list-by-subscription /
asset DELETE, identities, initial and set keys, list filters, Retry-After, Azure's defaults, operation URLs
across a restart. Through the unmodified SDKs where they can express the call (their generated REST clients
included), else raw ARM calls with a token. docs/emulator.md "ARM conformance" lists each case."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from azure.ai.ml import MLClient
from azure.ai.ml.entities import (
    IdentityConfiguration, ManagedIdentityConfiguration, ManagedOnlineEndpoint,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.monitor.models import AutoscaleProfile, AutoscaleSettingResource, ScaleCapacity

from emulator import api_versions, process
from tasks import clients

UAI = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-r1/providers/"
       "Microsoft.ManagedIdentity/userAssignedIdentities/{}")


def _ws(conn: dict) -> str:
    return (f"/subscriptions/{conn['subscription_id']}/resourceGroups/{conn['resource_group']}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{conn['workspace']}")


def _error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


# ---- create-only fields ---------------------------------------------------------------------------

def test_a_new_instance_type_means_a_new_deployment(ml, endpoint, fake_deployment, arm):
    name = endpoint
    ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    with pytest.raises(HttpResponseError, match="instanceType .* cannot be changed") as err:
        ml.online_deployments.begin_create_or_update(
            fake_deployment(name, "blue", instance_type="Standard_NC48ads_A100_v4")).result()
    assert err.value.status_code == 400
    assert ml.online_deployments.get("blue", name).instance_type == "Standard_NC24ads_A100_v4"  # unchanged
    body = arm.get(ml.online_deployments.get("blue", name).id).json()
    body["properties"]["endpointComputeType"] = "Kubernetes"  # the SDK cannot send this for a managed one
    status, code, message = _error(arm.put(body["id"], json=body))
    assert (status, code) == (400, "BadArgument") and "endpointComputeType" in message
    body["properties"]["endpointComputeType"] = "managed"  # case-insensitive, as Azure's enums
    assert arm.put(body["id"], json=body).status_code == 200


def test_an_endpoint_put_needs_a_location_which_the_sdk_always_sends(emulator, ml, arm, unique_name):
    name = unique_name()
    url = f"{_ws(emulator.conn)}/onlineEndpoints/{name}"
    assert _error(arm.put(url, json={"properties": {"authMode": "Key"}}))[:2] == (400, "LocationRequired")
    assert arm.get(url).status_code == 404  # refused: nothing created
    created = ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    assert created.location == "swedencentral"  # the SDK sent the workspace's location
    ml.online_endpoints.begin_delete(name).result()


# ---- parents that do not exist ---------------------------------------------------------------------

def test_unknown_workspace_resource_group_and_subscription_are_404_as_arm_answers(emulator, ml):
    with pytest.raises(ResourceNotFoundError, match=r"\(ResourceNotFound\).*ws-nope"):
        ml.workspaces.get("ws-nope")
    other_rg = clients.ml_client(emulator.settings(resource_group="rg-nope"))
    with pytest.raises(ResourceNotFoundError, match=r"\(ResourceGroupNotFound\) Resource group 'rg-nope'"):
        other_rg.workspaces.get(emulator.conn["workspace"])
    sub = str(uuid.uuid4())
    other_sub = clients.ml_client(emulator.settings(subscription_id=sub))
    with pytest.raises(ResourceNotFoundError, match=rf"\(SubscriptionNotFound\) The subscription '{sub}'"):
        other_sub.workspaces.get(emulator.conn["workspace"])


def test_nothing_is_created_under_a_missing_parent(emulator, arm, unique_name):
    conn = emulator.conn
    name = unique_name()
    for ws in (_ws(conn).replace(conn["workspace"], "ws-nope"), _ws(conn).replace(conn["resource_group"], "rg-nope")):
        url = f"{ws}/onlineEndpoints/{name}"
        assert arm.put(url, json={"location": "swedencentral", "properties": {"authMode": "Key"}}).status_code == 404
        assert arm.get(url).status_code == 404
        assert arm.put(f"{ws}/environments/e/versions/1", json={"properties": {"image": "x"}}).status_code == 404
    assert arm.get(f"{_ws(conn)}/onlineEndpoints/{name}").status_code == 404
    malformed = arm.get(f"/subscriptions/not-a-guid/resourceGroups/{conn['resource_group']}")
    assert malformed.status_code in (400, 404)


def test_autoscale_settings_under_an_unknown_resource_group(emulator):
    monitor = clients.monitor_client(emulator.settings())
    setting = AutoscaleSettingResource(
        location="swedencentral", enabled=True, target_resource_uri=_ws(emulator.conn) + "/onlineEndpoints/x",
        profiles=[AutoscaleProfile(name="default", rules=[],
                                   capacity=ScaleCapacity(minimum="1", maximum="2", default="1"))])
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        monitor.autoscale_settings.create_or_update("rg-nope", "nope-autoscale", setting)
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        monitor.autoscale_settings.get("rg-nope", "nope-autoscale")
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        list(monitor.autoscale_settings.list_by_resource_group("rg-nope"))


# ---- api-version ------------------------------------------------------------------------------------

def test_api_version_missing_or_unknown_is_refused_as_arm_does(emulator, arm):
    url = _ws(emulator.conn)
    bare = httpx.get(emulator.conn["arm_url"] + url, headers=dict(arm.headers), verify=emulator.tls(), trust_env=False)
    assert _error(bare)[:2] == (400, "MissingApiVersionParameter")
    status, code, message = _error(arm.get(url, params={"api-version": "1999-01-01"}))
    assert (status, code) == (400, "InvalidApiVersionParameter")
    assert "'1999-01-01' is invalid" in message and "2025-12-01" in message and "2023-04-01-preview" in message
    assert arm.get(url, params={"api-version": "2025-12-01"}).status_code == 200
    insights = f"/subscriptions/{emulator.conn['subscription_id']}/providers/Microsoft.Insights/autoscalesettings"
    assert _error(arm.get(insights, params={"api-version": "2025-12-01"}))[1] == "InvalidApiVersionParameter"


def test_the_table_holds_the_versions_the_sdks_send(ml, emulator):
    """azure-ai-ml pins one api-version per operation group (MLClient); all of them are in the table."""
    sent = {
        ml.online_endpoints._online_operation._config.api_version,
        ml.online_endpoints._online_deployment_operation._config.api_version,
        ml.online_deployments._online_deployment._config.api_version,
        ml.environments._version_operations._config.api_version,
        ml.models._model_versions_operation._config.api_version,
        ml.workspaces._operation._config.api_version,
    }
    assert sent <= set(api_versions.SUPPORTED["microsoft.machinelearningservices"])
    assert "2025-12-01" in api_versions.SUPPORTED["microsoft.machinelearningservices"]
    from azure.mgmt.monitor.operations._autoscale_settings_operations import build_get_request

    request = build_get_request("rg", "name", emulator.conn["subscription_id"])
    assert httpx.URL(request.url).params["api-version"] in api_versions.SUPPORTED["microsoft.insights"]


# ---- operations: PATCH, skus, list by subscription, asset DELETE ----------------------------------------

def _rg_ws(ml: MLClient) -> tuple[str, str]:
    return ml.resource_group_name, ml.workspace_name


def test_endpoint_patch_changes_tags_and_identity(ml, endpoint):
    rest = ml.online_endpoints._online_operation
    uai = UAI.format("r1-pull")
    patched = rest.begin_update(*_rg_ws(ml), endpoint, body={
        "tags": {"team": "r1"}, "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}}}).result()
    assert patched.tags == {"team": "r1"}
    got = ml.online_endpoints.get(endpoint)
    assert got.tags == {"team": "r1"} and got.identity.type == "user_assigned"
    [assigned] = got.identity.user_assigned_identities
    # azure-ai-ml copies the REST fields onto the entity under their REST names (as_dict of the new models)
    assert assigned.resource_id == uai and vars(assigned)["clientId"] and vars(assigned)["principalId"]
    with pytest.raises(HttpResponseError, match="changes only identity, tags"):
        rest.begin_update(*_rg_ws(ml), endpoint, body={"tags": {}, "properties": {"traffic": {}}}).result()
    rest.begin_update(*_rg_ws(ml), endpoint, body={"identity": {"type": "SystemAssigned"}}).result()
    got = ml.online_endpoints.get(endpoint)
    assert got.identity.type == "system_assigned" and not got.identity.user_assigned_identities
    assert got.tags == {"team": "r1"}  # a PATCH without tags keeps them


def test_deployment_patch_scales_and_tags_and_lists_its_skus(emulator, ml, endpoint, fake_deployment, wait_for):
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(endpoint, "blue")).result()
    rest = ml.online_deployments._online_deployment
    patched = rest.begin_update(*_rg_ws(ml), endpoint, "blue",
                                body={"tags": {"colour": "blue"}, "sku": {"capacity": 2}}).result()
    assert patched.sku.capacity == 2 and patched.tags == {"colour": "blue"}
    assert ml.online_deployments.get("blue", endpoint).provisioning_state.lower() == "succeeded"
    assert len([i for i in emulator.instances(dep.id) if i["ready"]]) == 2  # the LRO ended when both were ready
    with pytest.raises(HttpResponseError, match="between 1 and 50"):
        rest.begin_update(*_rg_ws(ml), endpoint, "blue", body={"sku": {"capacity": 0}}).result()
    [sku] = list(rest.list_skus(*_rg_ws(ml), endpoint, "blue"))
    assert sku.resource_type == "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
    assert (sku.capacity.minimum, sku.capacity.maximum) == (1, 50) and sku.sku.name == "Default"
    with pytest.raises(ResourceNotFoundError):
        list(rest.list_skus(*_rg_ws(ml), endpoint, "nope"))


def test_autoscale_settings_listed_by_subscription(emulator, ml, endpoint, fake_deployment):
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(endpoint, "blue")).result()
    settings = emulator.settings()
    monitor = clients.monitor_client(settings)
    name = f"{endpoint}-autoscale"
    monitor.autoscale_settings.create_or_update(settings.resource_group, name, AutoscaleSettingResource(
        location="swedencentral", enabled=True, target_resource_uri=dep.id,
        profiles=[AutoscaleProfile(name="default", rules=[],
                                   capacity=ScaleCapacity(minimum="1", maximum="2", default="1"))]))
    try:
        assert name in [s.name for s in monitor.autoscale_settings.list_by_subscription()]
    finally:
        monitor.autoscale_settings.delete(settings.resource_group, name)
    assert name not in [s.name for s in monitor.autoscale_settings.list_by_subscription()]


def test_environment_and_model_versions_can_be_deleted(ml):
    from azure.ai.ml.entities import Environment, Model

    env_name, model_name = f"env-{uuid.uuid4().hex[:8]}", f"model-{uuid.uuid4().hex[:8]}"
    env = ml.environments.create_or_update(Environment(name=env_name, version="1", image="local/fake-engine:1"))
    assert env.os_type == "Linux"  # Azure's default
    ml.models._model_versions_operation.create_or_update(
        *_rg_ws(ml), model_name, "1", body={"properties": {"modelUri": "azureml://x"}})
    ml.environments._version_operations.delete(*_rg_ws(ml), env_name, "1")
    ml.models._model_versions_operation.delete(*_rg_ws(ml), model_name, "1")
    with pytest.raises(ResourceNotFoundError):
        ml.environments.get(env_name, version="1")
    with pytest.raises(ResourceNotFoundError):
        ml.models.get(model_name, version="1")
    ml.environments._version_operations.delete(*_rg_ws(ml), env_name, "1")  # already gone: 204, no error


# ---- identities, keys, list filters --------------------------------------------------------------------

@pytest.mark.parametrize("identity", [
    IdentityConfiguration(type="none"),
    IdentityConfiguration(type="system_assigned"),
    IdentityConfiguration(type="user_assigned", user_assigned_identities=[
        ManagedIdentityConfiguration(resource_id=UAI.format("a")),
        ManagedIdentityConfiguration(resource_id=UAI.format("b"))]),
], ids=["none", "system", "user"])
def test_identities_as_arm_fills_them_in(ml, unique_name, identity):
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, identity=identity)).result()
    try:
        got = ml.online_endpoints.get(name).identity
        assert got.type == identity.type
        if identity.type == "none":
            assert got.principal_id is None and got.tenant_id is None
        if identity.type == "system_assigned":
            assert got.principal_id and got.tenant_id
        if identity.type == "user_assigned":
            assert got.principal_id is None
            ids = {i.resource_id: i for i in got.user_assigned_identities}
            assert set(ids) == {UAI.format("a"), UAI.format("b")}
            assert all(vars(i)["clientId"] and vars(i)["principalId"] for i in ids.values())  # REST names (SDK)
            assert vars(ids[UAI.format("a")])["clientId"] != vars(ids[UAI.format("b")])["clientId"]
    finally:
        ml.online_endpoints.begin_delete(name).result()


def test_keys_given_at_create_and_by_regenerate_are_honoured(emulator, ml, arm, unique_name):
    name = unique_name()
    url = f"{_ws(emulator.conn)}/onlineEndpoints/{name}"
    created = arm.put(url, json={"location": "swedencentral", "properties": {
        "authMode": "Key", "keys": {"primaryKey": "p" * 44, "secondaryKey": "s" * 44}}})
    assert created.status_code == 201 and "keys" not in created.json()["properties"]  # a secret: never returned
    try:
        keys = ml.online_endpoints.get_keys(name)
        assert (keys.primary_key, keys.secondary_key) == ("p" * 44, "s" * 44)
        regenerate = arm.post(url + "/regenerateKeys", json={"keyType": "Secondary", "keyValue": "t" * 44})
        assert regenerate.status_code == 202
        assert ml.online_endpoints.get_keys(name).secondary_key == "t" * 44
        ml.online_endpoints.begin_regenerate_keys(name, key_type="secondary").result()  # sends the current value
        assert ml.online_endpoints.get_keys(name).secondary_key not in ("t" * 44, "s" * 44)
        assert arm.post(url + "/regenerateKeys", json={"keyType": "Primary", "keyValue": ""}).status_code == 400
    finally:
        ml.online_endpoints.begin_delete(name).result()


def test_endpoint_list_filters_by_name(ml, endpoint):
    rest = ml.online_endpoints._online_operation
    assert [e.name for e in rest.list(*_rg_ws(ml), name=endpoint)] == [endpoint]
    assert list(rest.list(*_rg_ws(ml), name=endpoint + "-not")) == []
    assert len(list(rest.list(*_rg_ws(ml), count=1))) == 1


# ---- Retry-After, Azure's defaults, operations across a restart ----------------------------------------

def test_lros_stay_fast_without_a_fractional_retry_after(ml, endpoint, fake_deployment):
    """Polls carry no Retry-After (whole seconds would make each poll last a second); the factory's
    0.05 s client interval keeps a deployment create near its 1 s readiness delay."""
    started = time.monotonic()
    ml.online_deployments.begin_create_or_update(fake_deployment(endpoint, "blue")).result()
    assert time.monotonic() - started < 6


def test_defaults_azure_fills_in(ml, endpoint, fake_deployment):
    assert ml.online_endpoints.get(endpoint).public_network_access == "Enabled"
    dep = ml.online_deployments.begin_create_or_update(
        fake_deployment(endpoint, "blue", egress_public_network_access=None)).result()
    assert dep.egress_public_network_access == "Enabled"


def test_an_operation_url_survives_a_restart(fresh_emulator):
    emulator = fresh_emulator
    conn = emulator.conn
    with emulator.arm_client() as http:
        put = http.put(f"{_ws(conn)}/onlineEndpoints/ops-restart",
                       json={"location": conn["location"], "properties": {"authMode": "Key"}})
        assert put.status_code == 201
        status_url = put.headers["Azure-AsyncOperation"]
    assert process.stop(emulator.state_dir)
    process.start_detached(emulator.state_dir, [])
    with emulator.arm_client() as http:
        assert http.get(status_url).json()["status"] == "Succeeded"
        unknown = status_url.replace(status_url.rsplit("/", 1)[1].split("?")[0], uuid.uuid4().hex)
        assert http.get(unknown).status_code == 404
