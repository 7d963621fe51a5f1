"""Contract: the unmodified MLClient and MonitorManagementClient perform every call they send for a
managed online endpoint (workspace, endpoint, deployment, traffic, keys, logs, environment version,
autoscale) against the emulator, in every auth mode, and get what they need."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.monitor.models import (
    AutoscaleProfile, AutoscaleSettingResource, AutoscaleSettingResourcePatch, MetricTrigger, ScaleAction,
    ScaleCapacity, ScaleRule,
)

from tasks import clients

CHAT = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def score(endpoint, bearer: str, ca, deployment: str | None = None, path: str = "v1/chat/completions"):
    base = endpoint.scoring_uri.removesuffix("/score")
    headers = {"Authorization": f"Bearer {bearer}"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return httpx.post(f"{base}/{path}", json=CHAT, headers=headers, verify=ca, timeout=30, trust_env=False)


def test_workspace_reports_the_emulator_location(ml):
    ws = ml.workspaces.get("ws-r1")
    assert ws.location == "swedencentral"


def test_key_endpoint_full_lifecycle(emulator, ml, unique_name, fake_deployment, capsys):
    name = unique_name()
    settings = emulator.settings()
    ca = ssl.create_default_context(cafile=clients.data_plane_ca(settings))
    created = ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=name, auth_mode="key", public_network_access="disabled", tags={"app": "r1"})
    ).result()
    assert created.provisioning_state.lower() == "succeeded"
    assert created.scoring_uri == f"{emulator.conn['scoring_base']}/endpoints/{name}/score"

    blue = ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    assert blue.provisioning_state.lower() == "succeeded"
    assert blue.instance_count == 1
    assert capsys.readouterr().out == ""  # the factory silences the SDK's poll dots

    ep = ml.online_endpoints.get(name)
    assert ep.traffic == {"blue": 0}
    ep.traffic = {"blue": 100}
    ep = ml.online_endpoints.begin_create_or_update(ep).result()
    assert ep.traffic == {"blue": 100}
    assert ep.public_network_access == "disabled" and ep.tags == {"app": "r1"}  # full PUT kept them
    assert name in [e.name for e in ml.online_endpoints.list()]

    keys = ml.online_endpoints.get_keys(name)
    answer = score(ep, keys.primary_key, ca)
    assert answer.status_code == 200, answer.text
    assert answer.headers["azureml-model-deployment"] == "blue"
    assert score(ep, keys.secondary_key, ca).status_code == 200
    assert score(ep, "not-a-key", ca).status_code == 401

    ml.online_endpoints.begin_regenerate_keys(name, key_type="primary").result()
    new_keys = ml.online_endpoints.get_keys(name)
    assert new_keys.primary_key != keys.primary_key and new_keys.secondary_key == keys.secondary_key
    assert score(ep, keys.primary_key, ca).status_code == 401  # the old key stops at once
    assert score(ep, new_keys.primary_key, ca).status_code == 200

    text = ml.online_endpoints.invoke(name, request_file=_request_file(), deployment_name="blue")
    assert "choices" in json.loads(text)

    assert [d.name for d in ml.online_deployments.list(name)] == ["blue"]
    assert ml.online_deployments.get("blue", name).instance_type == "Standard_NC24ads_A100_v4"
    logs = ml.online_deployments.get_logs("blue", name, lines=200)
    assert "/v1/chat/completions" in logs
    assert len(ml.online_deployments.get_logs("blue", name, lines=2).splitlines()) == 2
    init = ml.online_deployments.get_logs("blue", name, lines=5, container_type="storage-initializer")
    assert "model" in init.lower()

    ml.online_endpoints.begin_delete(name).result()
    with pytest.raises(ResourceNotFoundError):
        ml.online_endpoints.get(name)
    assert emulator.instances(blue.id) == []


def _request_file() -> str:
    from pathlib import Path

    path = Path("request.json")
    path.write_text(json.dumps(CHAT))
    return str(path)


def test_aml_token_endpoint(emulator, ml, unique_name, fake_deployment):
    name = unique_name()
    ca = ssl.create_default_context(cafile=clients.data_plane_ca(emulator.settings()))
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="aml_token")).result()
    ml.online_deployments.begin_create_or_update(fake_deployment(name, "green")).result()
    ep = ml.online_endpoints.get(name)
    token = ml.online_endpoints.get_keys(name)
    assert token.access_token and token.expiry_time_utc > token.refresh_after_time_utc
    assert score(ep, token.access_token, ca, deployment="green").status_code == 200

    other = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=other, auth_mode="aml_token")).result()
    other_token = ml.online_endpoints.get_keys(other).access_token
    assert score(ep, other_token, ca, deployment="green").status_code == 401  # bound to its endpoint

    emulator.set_faults(aml_token_lifetime_seconds=0)
    try:
        expired = ml.online_endpoints.get_keys(name).access_token
    finally:
        emulator.set_faults()
    assert score(ep, expired, ca, deployment="green").status_code == 401
    with pytest.raises(HttpResponseError, match="AMLToken authentication, not Key"):
        ml.online_endpoints._online_operation.list_keys(
            emulator.conn["resource_group"], "ws-r1", name)  # listKeys is refused for token endpoints
    ml.online_endpoints.begin_delete(name).result()
    ml.online_endpoints.begin_delete(other).result()


def test_aad_token_endpoint(emulator, ml, unique_name, fake_deployment):
    name = unique_name()
    settings = emulator.settings()
    ca = ssl.create_default_context(cafile=clients.data_plane_ca(settings))
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="aad_token")).result()
    ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    ep = ml.online_endpoints.get(name)
    aad = ml.online_endpoints.get_keys(name)  # from the local credential, audience https://ml.azure.com
    assert score(ep, aad.access_token, ca, deployment="blue").status_code == 200

    management = clients.credential(settings).get_token(emulator.conn["arm_url"] + "/.default").token
    assert score(ep, management, ca, deployment="blue").status_code == 401  # wrong audience
    expired = emulator.mint("https://ml.azure.com/.default", lifetime_seconds=0)
    assert score(ep, expired, ca, deployment="blue").status_code == 401
    ml.online_endpoints.begin_delete(name).result()


def test_arm_refuses_calls_without_an_emulator_token(emulator):
    url = emulator.conn["arm_url"] + "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
    for headers in ({}, {"Authorization": "Bearer forged"}):
        response = httpx.get(url, headers=headers, verify=emulator.tls(), trust_env=False)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    scoring = emulator.credential().get_token("https://ml.azure.com/.default").token
    response = httpx.get(url, headers={"Authorization": f"Bearer {scoring}"},
                         verify=emulator.tls(), trust_env=False)
    assert response.status_code == 401  # a scoring token cannot manage


def test_paths_are_case_insensitive(emulator, arm):
    conn = emulator.conn
    response = arm.get(f"/SUBSCRIPTIONS/{conn['subscription_id'].upper()}/RESOURCEGROUPS/{conn['resource_group'].upper()}"
                       f"/PROVIDERS/microsoft.machinelearningservices/WORKSPACES/{conn['workspace'].upper()}")
    assert response.status_code == 200 and response.json()["location"] == "swedencentral"


def test_environment_versions_put_and_get(emulator, ml):
    from azure.ai.ml.entities import Environment

    env = ml.environments.create_or_update(Environment(name="r1-serving", version="3", image="local/fake-engine:1"))
    assert env.image == "local/fake-engine:1"
    assert ml.environments.get("r1-serving", version="3").image == "local/fake-engine:1"
    with pytest.raises(ResourceNotFoundError):
        ml.environments.get("r1-serving", version="999")


def test_autoscale_settings_crud(emulator, ml, endpoint, fake_deployment):
    name = endpoint
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    settings = emulator.settings()
    monitor = clients.monitor_client(settings)
    rg = settings.resource_group
    rule = ScaleRule(
        metric_trigger=MetricTrigger(
            metric_name="GpuUtilizationPercentage", metric_resource_uri=dep.id, time_grain="PT1M",
            statistic="Average", time_window="PT5M", time_aggregation="Average", operator="GreaterThan",
            threshold=70),
        scale_action=ScaleAction(direction="Increase", type="ChangeCount", value="1", cooldown="PT5M"))
    profile = AutoscaleProfile(name="default", capacity=ScaleCapacity(minimum="1", maximum="3", default="1"),
                               rules=[rule])
    setting_name = f"{name}-autoscale"
    created = monitor.autoscale_settings.create_or_update(rg, setting_name, AutoscaleSettingResource(
        location="swedencentral", profiles=[profile], enabled=True, target_resource_uri=dep.id,
        tags={"app": "r1"}))
    assert created.target_resource_uri == dep.id and created.enabled
    got = monitor.autoscale_settings.get(rg, setting_name)
    assert got.profiles[0].rules[0].metric_trigger.metric_name == "GpuUtilizationPercentage"
    patched = monitor.autoscale_settings.update(rg, setting_name, AutoscaleSettingResourcePatch(
        enabled=True, profiles=[AutoscaleProfile(name="default", rules=[rule],
                                                 capacity=ScaleCapacity(minimum="1", maximum="5", default="2"))]))
    assert patched.profiles[0].capacity.maximum == "5" and patched.tags == {"app": "r1"}
    assert setting_name in [s.name for s in monitor.autoscale_settings.list_by_resource_group(rg)]
    with pytest.raises(HttpResponseError, match="minimum <= default <= maximum"):
        monitor.autoscale_settings.update(rg, setting_name, AutoscaleSettingResourcePatch(
            enabled=True, profiles=[AutoscaleProfile(name="default", rules=[],
                                                     capacity=ScaleCapacity(minimum="3", maximum="2", default="2"))]))
    monitor.autoscale_settings.delete(rg, setting_name)
    with pytest.raises(ResourceNotFoundError):
        monitor.autoscale_settings.get(rg, setting_name)


def test_lro_headers_follow_the_contract(ml, endpoint, arm, fake_deployment):
    """No Retry-After on 202 initial answers nor on polls: Retry-After is whole seconds, and without one
    the client polls at its own interval (0.05 s from the client factory), not one second."""
    name = endpoint
    dep = fake_deployment(name, "blue")
    ml.online_deployments.begin_create_or_update(dep).result()
    dep_url = ml.online_deployments.get("blue", name).id
    body = arm.get(dep_url).json()
    body["properties"]["environmentVariables"] = {"FAKE_ENGINE_STARTUP_DELAY_S": "1"}  # forces a replacement
    put = arm.put(dep_url, json=body)
    assert put.status_code == 200 and "Retry-After" not in put.headers
    poll = arm.get(put.headers["Azure-AsyncOperation"])
    assert poll.json()["status"] == "InProgress" and "Retry-After" not in poll.headers
    ep = ml.online_endpoints.get(name)
    delete = arm.delete(ep.id)
    assert delete.status_code == 202 and "Retry-After" not in delete.headers
    assert delete.headers["Location"] and delete.headers["Azure-AsyncOperation"]
    done = arm.get(delete.headers["Azure-AsyncOperation"])
    assert done.json()["status"] == "Succeeded" and "Retry-After" not in done.headers
    assert arm.get(delete.headers["Location"]).status_code == 200
    assert arm.get(put.headers["Azure-AsyncOperation"]).json()["status"] == "Canceled"  # deleted meanwhile
