"""State that survives: after SIGTERM or SIGKILL and a restart on the same state dir, endpoints,
deployments, keys, traffic and autoscale settings are back and the instances run again.
SIGKILL must also take the instances down (the watchdog), so nothing is left running."""

from __future__ import annotations

import os
import signal
import ssl

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.mgmt.monitor.models import AutoscaleProfile, AutoscaleSettingResource, ScaleCapacity

from emulator import process
from tasks import clients




@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_everything_is_back_after_a_restart(fresh_emulator, unique_name, fake_deployment, how, wait_for,
                                           refused):
    emulator = fresh_emulator
    settings = emulator.settings()
    ml = clients.ml_client(settings)
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    ep = ml.online_endpoints.get(name)
    ep.traffic = {"blue": 100}
    ml.online_endpoints.begin_create_or_update(ep).result()
    ml.online_endpoints.begin_regenerate_keys(name, key_type="secondary").result()
    keys = ml.online_endpoints.get_keys(name)
    clients.monitor_client(settings).autoscale_settings.create_or_update(
        settings.resource_group, f"{name}-autoscale", AutoscaleSettingResource(
            location="swedencentral", enabled=True, target_resource_uri=dep.id,
            profiles=[AutoscaleProfile(name="default", rules=[],
                                       capacity=ScaleCapacity(minimum="1", maximum="2", default="1"))]))
    instance_url = emulator.instances(dep.id)[0]["url"]
    before = emulator.conn

    if how == "SIGTERM":
        assert process.stop(emulator.state_dir)
        assert not emulator.state.connection.exists()
    else:
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: process.running_pid(emulator.state) is None, what="the emulator to die")
    wait_for(lambda: refused(instance_url), what="the instance to die with the emulator")

    after = process.start_detached(emulator.state_dir, [])
    assert after["pid"] != before["pid"]
    assert after["arm_url"] == before["arm_url"]  # ports are reused when free, so URLs survive
    settings = emulator.settings()
    ml = clients.ml_client(settings)
    ep = ml.online_endpoints.get(name)
    assert ep.traffic == {"blue": 100} and ep.auth_mode == "key"
    again = ml.online_endpoints.get_keys(name)
    assert (again.primary_key, again.secondary_key) == (keys.primary_key, keys.secondary_key)
    setting = clients.monitor_client(settings).autoscale_settings.get(settings.resource_group, f"{name}-autoscale")
    assert setting.target_resource_uri == dep.id
    assert ml.online_deployments.get("blue", name).provisioning_state.lower() == "succeeded"
    wait_for(lambda: any(i["ready"] for i in emulator.instances(dep.id)), what="the instance to be back")
    answer = httpx.post(ep.scoring_uri.removesuffix("/score") + "/v1/completions",
                        json={"model": "m", "prompt": "hi", "max_tokens": 4},
                        verify=ssl.create_default_context(cafile=clients.data_plane_ca(settings)),
                        headers={"Authorization": f"Bearer {keys.primary_key}"})
    assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == "blue"


def test_a_second_emulator_on_the_same_state_dir_is_refused(fresh_emulator):
    with pytest.raises(process.EmulatorError, match="already running"):
        process.start_detached(fresh_emulator.state_dir, [])
    assert process.connection(fresh_emulator.state)["pid"] == fresh_emulator.conn["pid"]
