"""`python -m flows.rollout` as users and CI run it: exit codes, refusals that change nothing, and a
rollout killed mid-shift that a re-run finishes (lock taken over, no duplicates, old colour not lost)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from azure.core.exceptions import ResourceNotFoundError

from tasks import clients
from tasks.rollout.lock import LOCK_TAG
from tests.rollout_support import (REPO_ROOT, cli_env, fast_env, knobs, live_deployments, report, run_cli,
                                   run_in_process, steps)


@pytest.fixture
def api_env(prefect_api):
    """Subprocesses use the session's Prefect server instead of starting their own."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


def assert_no_endpoint(emulator, endpoint: str) -> None:
    with pytest.raises(ResourceNotFoundError):
        clients.ml_client(emulator.settings()).online_endpoints.get(endpoint)


def test_invalid_settings_exit_2_before_anything(emulator, tmp_path, unique_name):
    endpoint = unique_name("invalid")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_TRAFFIC_STEPS="[50, 40]",
                   R1_BAKE_SECONDS="-1")
    code, _, stderr = run_cli(env, tmp_path / "home")
    assert code == 2
    problems = stderr.strip().splitlines()
    assert any("R1_TRAFFIC_STEPS" in line for line in problems) and any("R1_BAKE_SECONDS" in line for line in problems)
    assert "Traceback" not in stderr
    assert_no_endpoint(emulator, endpoint)
    assert not (tmp_path / "reports").exists()


def test_policy_refusal_exits_2_and_creates_nothing(emulator, api_env, tmp_path, unique_name):
    endpoint = unique_name("policy")
    env = {**fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_PUBLIC_NETWORK_ACCESS="enabled"),
           **api_env}
    code, outcome, stderr = run_cli(env, tmp_path / "home")
    assert code == 2, stderr
    assert outcome["outcome"] == "refused" and "endpoint-public-network-access" in outcome["reason"]
    assert_no_endpoint(emulator, endpoint)
    record = json.loads((tmp_path / "reports").glob("rollout-*/rollout.json").__next__().read_text())
    assert record["outcome"] == "refused"


def _wait_for_bake(reports, proc: subprocess.Popen, timeout_s: float = 300) -> dict:
    """The running rollout's timeline once it says a traffic shift is baking."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in reports.glob("rollout-*/rollout.json"):
            try:
                record = json.loads(path.read_text())
            except ValueError:
                continue  # caught mid-write
            if record.get("events") and steps(record)[-1] == ("shift 25 %", "info"):
                return record
        time.sleep(0.2)
    raise AssertionError("the rollout never reached a traffic shift")


@pytest.mark.slow
def test_killed_mid_shift_then_rerun_converges(emulator, api_env, monkeypatch, tmp_path, unique_name):
    endpoint = unique_name("killed")
    env = {**fast_env(emulator.state_dir, tmp_path / "reports", endpoint), **api_env}
    status, first = run_in_process(monkeypatch, env)
    assert status == "completed" and first["new"] == "blue", first
    ml = clients.ml_client(emulator.settings())

    change = {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=21)}
    slow = {**change, "R1_BAKE_SECONDS": "120", "R1_REPORTS_DIR": str(tmp_path / "doomed")}
    doomed = subprocess.Popen([sys.executable, "-m", "flows.rollout", "--json"], cwd=REPO_ROOT,
                              env=cli_env(slow, tmp_path / "home-doomed"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_bake(tmp_path / "doomed", doomed)
        assert live_deployments(ml, endpoint) == ({"blue": 75, "green": 25}, ["blue", "green"])

        code, outcome, stderr = run_cli(change, tmp_path / "home-second")  # a second rollout meanwhile
        assert code == 2, stderr
        assert outcome["outcome"] == "refused" and "holds" in outcome["reason"]
        assert live_deployments(ml, endpoint) == ({"blue": 75, "green": 25}, ["blue", "green"])
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=60)
    assert LOCK_TAG in (ml.online_endpoints.get(endpoint).tags or {})  # a killed run cannot clean up

    status, rerun = run_in_process(monkeypatch, change)
    assert status == "completed", rerun
    assert (rerun["outcome"], rerun["new"], rerun["old"]) == ("promoted", "green", "blue")
    record = report(rerun)
    assert "resuming" in next(e["detail"] for e in record["events"] if e["step"] == "plan")
    assert ("stage", "skipped") in steps(record)
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])
    assert LOCK_TAG not in (ml.online_endpoints.get(endpoint).tags or {})
