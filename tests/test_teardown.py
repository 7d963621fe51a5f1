"""Teardown on the emulator: refused without the endpoint's name or while a rollout holds it (nothing changed);
complete with it (endpoint, deployments, autoscale gone; model and environment assets kept); a re-run after a
killed teardown finishes the job."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from flows.teardown import teardown
from tasks import clients
from tasks import teardown as steps
from tasks.azureml.autoscale import autoscale_name, build_autoscale
from tasks.azureml.endpoint import get_endpoint, set_traffic, update_tags
from tasks.cli import InputError
from tasks.rollout.lock import LOCK_TAG, Holder
from tasks.rollout.steps import Refused
from tests.rollout_support import REPO_ROOT, cli_env, fast_env, live_deployments, run_in_process


def run_teardown(confirm: str):
    """The flow's result dict, or the exception it ended with."""
    return teardown(confirm=confirm, return_state=True).result(raise_on_failure=False)


def autoscale_names(monitor, s) -> list[str]:
    return sorted(a.name for a in monitor.autoscale_settings.list_by_resource_group(s.resource_group)
                  if a.name.startswith(f"{s.endpoint_name}-"))


def test_refused_without_the_endpoints_name_then_complete_with_it(emulator, prefect_api, monkeypatch, tmp_path,
                                                                   unique_name, ml):
    endpoint = unique_name("td")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint)  # builds docker/: an environment asset
    status, promoted = run_in_process(monkeypatch, env)
    assert status == "completed", promoted
    s = emulator.settings(endpoint_name=endpoint)
    monitor = clients.monitor_client(s)
    environments = sorted(e.version for e in ml.environments.list(name="r1-vllm"))
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])
    assert autoscale_names(monitor, s) == [autoscale_name(endpoint, "blue")]

    for wrong in ("", endpoint.upper(), "r1-prod"):
        assert isinstance(run_teardown(wrong), InputError)
    proc = subprocess.run([sys.executable, "-m", "flows.teardown", "--confirm", "nope", "--json"], cwd=REPO_ROOT,
                          env=cli_env(env, tmp_path / "prefect"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"confirm must equal the endpoint's name '{endpoint}'" in proc.stderr
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])  # nothing changed
    assert autoscale_names(monitor, s) == [autoscale_name(endpoint, "blue")]

    done = run_teardown(endpoint)
    assert isinstance(done, dict), done
    assert (done["outcome"], done["endpoint_deleted"]) == ("torn down", True)
    assert [d["deployment"] for d in done["deployments"]] == ["blue"] and done["deployments"][0]["image"]
    assert done["autoscale"] == [autoscale_name(endpoint, "blue")] and "assets are kept" in done["kept"]
    assert get_endpoint(ml, endpoint) is None and autoscale_names(monitor, s) == []
    name, version = s.model_asset.split(":")
    assert ml.models.get(name, version=version).name == name  # the model asset stays
    assert sorted(e.version for e in ml.environments.list(name="r1-vllm")) == environments
    assert json.loads((Path(done["report_dir"]) / "teardown.json").read_text())["outcome"] == "torn down"

    assert run_teardown(endpoint)["outcome"] == "nothing to tear down"


def test_refused_while_a_rollout_holds_it_and_a_rerun_after_a_kill_finishes(
        emulator, prefect_api, monkeypatch, tmp_path, endpoint, fake_deployment, ml):
    for key, value in fast_env(emulator.state_dir, tmp_path / "reports", endpoint).items():
        monkeypatch.setenv(key, value)
    s = emulator.settings(endpoint_name=endpoint)
    monitor = clients.monitor_client(s)
    for colour in ("blue", "green"):
        ml.online_deployments.begin_create_or_update(fake_deployment(endpoint, colour)).result()
    set_traffic(ml, endpoint, {"blue": 100}, {"green": 10})
    blue = ml.online_deployments.get(name="blue", endpoint_name=endpoint)
    monitor.autoscale_settings.create_or_update(s.resource_group, autoscale_name(endpoint, "blue"),
                                                build_autoscale(s.autoscale, blue.id, s.region))

    rollout = Holder("rollout-run", "another-host", 1, time.time() + 3600)
    update_tags(ml, endpoint, {LOCK_TAG: rollout.encode()})
    refused = run_teardown(endpoint)
    assert isinstance(refused, Refused) and "rollout-run" in str(refused)
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue", "green"])
    assert ml.online_endpoints.get(endpoint).mirror_traffic == {"green": 10}
    assert autoscale_names(monitor, s) == [autoscale_name(endpoint, "blue")]

    # a teardown killed after its first steps: traffic at 0, green deleted, its lock left by a dead process
    dead = Holder("killed-run", socket.gethostname(), _dead_pid(), time.time() + 3600)
    update_tags(ml, endpoint, {LOCK_TAG: dead.encode()})
    assert steps.zero_traffic(ml, endpoint).startswith("traffic")
    ml.online_deployments.begin_delete(name="green", endpoint_name=endpoint).result()

    done = run_teardown(endpoint)
    assert isinstance(done, dict), done
    assert (done["outcome"], done["traffic"]) == ("torn down", "no traffic")
    assert [d["deployment"] for d in done["deployments"]] == ["blue"]
    assert done["autoscale"] == [autoscale_name(endpoint, "blue")]
    assert get_endpoint(ml, endpoint) is None and autoscale_names(monitor, s) == []
    try:
        ml.online_deployments.get(name="blue", endpoint_name=endpoint)
        raise AssertionError("blue outlived its endpoint")
    except ResourceNotFoundError:
        pass


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed run's)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
