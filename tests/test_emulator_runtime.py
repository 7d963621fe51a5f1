"""The instance runtime behind deployments: readiness gates provisioning, liveness and crashes restart,
capacity scales, logs come from the instances, unknown images fail like an image pull failure."""

from __future__ import annotations

import ssl

import httpx
import pytest
from azure.ai.ml.entities import Environment, ProbeSettings
from azure.core.exceptions import HttpResponseError

from tasks import clients


def test_never_ready_fails_provisioning_with_the_readiness_window(emulator, ml, endpoint, fake_deployment):
    name = endpoint
    dep = fake_deployment(name, "stuck", environment_variables={"FAKE_ENGINE_NEVER_READY": "true"},
                          readiness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=2))
    with pytest.raises(HttpResponseError, match="ResourceNotReady") as err:
        ml.online_deployments.begin_create_or_update(dep).result()
    assert "readiness probe (/health)" in str(err.value)
    got = ml.online_deployments.get("stuck", name)
    assert got.provisioning_state.lower() == "failed"
    assert emulator.instances(got.id) == []  # a failed deployment holds no processes
    assert "listening on" in ml.online_deployments.get_logs("stuck", name, lines=50)  # logs stay for forensics


def test_unknown_image_fails_like_an_image_pull_failure(ml, endpoint, fake_deployment):
    name = endpoint
    with pytest.raises(HttpResponseError, match="ImagePullFailure.*Failed to pull image 'contoso.io/web:2'"):
        ml.online_deployments.begin_create_or_update(fake_deployment(name, "web", image="contoso.io/web:2")).result()


def test_crash_restarts_the_instance(emulator, ml, endpoint, fake_deployment, wait_for):
    name = endpoint
    dep = ml.online_deployments.begin_create_or_update(
        fake_deployment(name, "crashy", environment_variables={"FAKE_ENGINE_CRASH_AFTER": "1"})).result()
    ca = ssl.create_default_context(cafile=clients.data_plane_ca(emulator.settings()))
    key = ml.online_endpoints.get_keys(name).primary_key
    url = f"{emulator.conn['scoring_base']}/endpoints/{name}/v1/completions"
    headers = {"Authorization": f"Bearer {key}", "azureml-model-deployment": "crashy"}
    first = httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 4}, headers=headers, verify=ca)
    assert first.status_code == 200
    httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 4}, headers=headers, verify=ca)
    instance = wait_for(lambda: [i for i in emulator.instances(dep.id) if i["restarts"] >= 1 and i["ready"]],
                        what="the crashed instance to come back ready")
    assert instance
    again = httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 4}, headers=headers, verify=ca)
    assert again.status_code == 200
    assert "restarting" in ml.online_deployments.get_logs("crashy", name, lines=200)


def test_liveness_failures_restart_the_instance(emulator, ml, endpoint, fake_deployment, wait_for):
    name = endpoint
    routes = {"port": 8000, "path": "/health"}
    env = Environment(image="local/fake-engine:1", inference_config={
        "liveness_route": {"port": 8000, "path": "/no-such-route"}, "readiness_route": routes,
        "scoring_route": {"port": 8000, "path": "/"}})
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(
        name, "unlive", environment=env,
        liveness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=2))).result()
    assert dep.provisioning_state.lower() == "succeeded"  # readiness passes; liveness does not
    wait_for(lambda: any(i["restarts"] >= 1 for i in emulator.instances(dep.id)), what="a liveness restart")
    assert "liveness probe failed 2 times" in ml.online_deployments.get_logs("unlive", name, lines=500)


def test_capacity_change_scales_and_image_change_replaces(emulator, ml, endpoint, fake_deployment):
    name = endpoint
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue", instance_count=2)).result()
    two = emulator.instances(dep.id)
    assert len(two) == 2 and all(i["ready"] for i in two)
    ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue", instance_count=1)).result()
    one = emulator.instances(dep.id)
    assert [i["url"] for i in one] == [two[0]["url"]]  # scaled in, the survivor untouched
    ml.online_deployments.begin_create_or_update(
        fake_deployment(name, "blue", instance_count=1, environment_variables={"FAKE_ENGINE_TTFT_MS": "1"})).result()
    replaced = emulator.instances(dep.id)
    assert len(replaced) == 1 and replaced[0]["url"] != one[0]["url"] and replaced[0]["ready"]


def test_deleting_a_deployment_stops_its_instances(emulator, ml, endpoint, fake_deployment, wait_for, refused):
    name = endpoint
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(name, "gone")).result()
    url = emulator.instances(dep.id)[0]["url"]
    assert httpx.get(url + "/health").status_code == 200
    ml.online_deployments.begin_delete("gone", name).result()
    wait_for(lambda: refused(url), what="the instance to stop")



def test_an_update_keeps_serving_until_the_new_instances_are_ready(emulator, ml, endpoint, fake_deployment,
                                                                     wait_for):
    name = endpoint
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    ep = ml.online_endpoints.get(name)
    ep.traffic = {"blue": 100}
    ep = ml.online_endpoints.begin_create_or_update(ep).result()
    before = emulator.instances(dep.id)[0]["url"]
    key = ml.online_endpoints.get_keys(name).primary_key
    url = ep.scoring_uri.removesuffix("/score") + "/v1/completions"
    ca = ssl.create_default_context(cafile=clients.data_plane_ca(emulator.settings()))
    poller = ml.online_deployments.begin_create_or_update(
        fake_deployment(name, "blue", environment_variables={"FAKE_ENGINE_STARTUP_DELAY_S": "1"}))
    statuses = []

    def serve_until_updated() -> bool:
        answer = httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 2}, verify=ca,
                            headers={"Authorization": f"Bearer {key}"})
        statuses.append(answer.status_code)
        return poller.done()

    wait_for(serve_until_updated, timeout=120, what="the update to finish")
    assert poller.result().provisioning_state.lower() == "succeeded"
    assert len(statuses) > 3 and set(statuses) == {200}  # the old instance served throughout
    assert emulator.instances(dep.id)[0]["url"] != before
