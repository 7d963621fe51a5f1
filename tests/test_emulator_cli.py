"""``python -m emulator``: detach, stop, foreground with SIGINT, the files it keeps, and that no key,
token or client secret ever reaches its log."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint

from emulator import process
from emulator.layout import StateDir
from tasks import clients

REPO_ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_detach_then_stop(tmp_path):
    state = StateDir(tmp_path / "emu")
    started = run("--state-dir", str(state.root), "--detach", "--location", "norwayeast")
    assert started.returncode == 0, started.stderr
    conn = json.loads(started.stdout)
    assert {"arm_url", "ca_cert", "subscription_id", "resource_group", "workspace", "location",
            "scoring_base"} <= conn.keys()
    assert conn["location"] == "norwayeast" and conn["arm_url"].startswith("https://127.0.0.1:")
    for private in (state.ca_key, state.server_key, state.client_secret, state.signing_key):
        assert private.stat().st_mode & 0o077 == 0, private
    health = httpx.get(conn["arm_url"] + "/_emulator/health",
                       verify=ssl.create_default_context(cafile=conn["ca_cert"]))
    assert health.json() == {"status": "ok"}
    assert health.request.url.scheme == "https"
    stopped = run("stop", "--state-dir", str(state.root))
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    assert not state.connection.exists() and process.running_pid(state) is None
    again = run("stop", "--state-dir", str(state.root))
    assert again.returncode == 0 and "no emulator running" in again.stderr


def test_foreground_stops_cleanly_on_sigint(tmp_path, wait_for):
    state = StateDir(tmp_path / "fg")
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--state-dir", str(state.root)], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: process.connection(state), what="connection.json")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err and not state.connection.exists()


def test_bad_arguments_are_refused(tmp_path, monkeypatch):
    answer = run("--state-dir", str(tmp_path), "--gpu-quota-cores", "-1")
    assert answer.returncode == 2 and "must not be negative" in answer.stderr
    monkeypatch.setenv("R1_EMULATOR_FAULTS", '{"error_rate": 3}')
    answer = run("--state-dir", str(tmp_path))
    assert answer.returncode == 2 and "R1_EMULATOR_FAULTS is not a valid faults object" in answer.stderr
    assert "error_rate" in answer.stderr and "Traceback" not in answer.stderr
    assert not (tmp_path / "connection.json").exists()


def test_no_secret_reaches_the_emulator_log(fresh_emulator, unique_name):
    settings = fresh_emulator.settings()
    ml = clients.ml_client(settings)
    key_ep, aml_ep = unique_name(), unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=key_ep, auth_mode="key")).result()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=aml_ep, auth_mode="aml_token")).result()
    keys = ml.online_endpoints.get_keys(key_ep)
    ml.online_endpoints.begin_regenerate_keys(key_ep, key_type="primary").result()
    secrets = [keys.primary_key, keys.secondary_key, ml.online_endpoints.get_keys(key_ep).primary_key,
               ml.online_endpoints.get_keys(aml_ep).access_token,
               clients.credential(settings).get_token("https://ml.azure.com/.default").token,
               fresh_emulator.state.client_secret.read_text().strip(),
               fresh_emulator.state.signing_key.read_text().strip()]
    fresh_emulator.set_faults(fail_provisioning=["x"])  # an admin call with the secret header
    process.stop(fresh_emulator.state_dir)
    log = fresh_emulator.state.log.read_text()
    assert "emulator ready" in log
    for secret in secrets:
        assert secret not in log


def test_model_references_must_be_workspace_model_versions(ml, endpoint, arm, fake_deployment):
    name = endpoint
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(
        name, "blue", model="azureml:r1-weights:1", model_mount_path="/var/azureml-app/models/r1")).result()
    assert dep.model.endswith("/models/r1-weights/versions/1")
    assert "r1-weights/versions/1" in ml.online_deployments.get_logs(
        "blue", name, lines=5, container_type="storage-initializer")
    bad = arm.put(dep.id, json={"location": "swedencentral", "sku": {"capacity": 1}, "properties": {
        "model": "hf://deepseek-ai/DeepSeek-R1", "instanceType": "Standard_NC24ads_A100_v4",
        "environmentId": ml.online_deployments.get("blue", name).environment}})
    assert bad.status_code == 400 and "not a workspace model version id" in bad.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["models", "environments"])
def test_asset_versions_put_and_get(emulator, arm, kind):
    settings = emulator.settings()
    path = (f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{settings.workspace}/{kind}/asset-{os.getpid()}/versions/2")
    body = {"properties": {"image": "local/fake-engine:1", "modelUri": "azureml://x"}}
    assert arm.put(path, json=body).status_code == 201
    assert arm.put(path, json=body).status_code == 200
    got = arm.get(path.upper()).json()
    assert got["properties"]["modelUri"] == "azureml://x" and got["id"].endswith("/versions/2")
    assert got["type"] == f"Microsoft.MachineLearningServices/workspaces/{kind}/versions"
    assert arm.get(path.replace("/versions/2", "/versions/3")).status_code == 404


def test_deleting_the_state_dir_stops_the_emulator_and_its_instances(start_emulator, unique_name,
                                                                      fake_deployment, wait_for, refused):
    import shutil

    emulator = start_emulator()
    ml = clients.ml_client(emulator.settings())
    name = unique_name()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()
    dep = ml.online_deployments.begin_create_or_update(fake_deployment(name, "blue")).result()
    url = emulator.instances(dep.id)[0]["url"]
    pid = emulator.conn["pid"]
    shutil.rmtree(emulator.state_dir)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), what="the orphaned emulator to stop")
    wait_for(lambda: refused(url), what="its instance to stop")


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] == "Z"


def test_realistic_mode_paces_operations(start_emulator, wait_for):
    emulator = start_emulator("--realistic")
    http = emulator.arm_client()
    conn = emulator.conn
    url = (f"{conn['arm_url']}/subscriptions/{conn['subscription_id']}/resourceGroups/{conn['resource_group']}"
           f"/providers/Microsoft.MachineLearningServices/workspaces/{conn['workspace']}/onlineEndpoints/paced-ep")
    put = http.put(url, json={"location": conn["location"], "properties": {"authMode": "Key"}})
    assert put.status_code == 201
    first = http.get(put.headers["Azure-AsyncOperation"])
    assert first.json()["status"] == "InProgress" and first.headers["Retry-After"] == "1"
    wait_for(lambda: http.get(put.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded",
             what="the paced operation to finish")
