"""Faults during a rollout: each ends with the old colour at 100 % and the reason in the report,
except transient ARM errors, which the rollout rides out through retries.

The module shares one endpoint: a first rollout puts blue at 100 %, and every faulty rollout after it
must leave that endpoint exactly as it found it (old colour serving, the new colour gone).
"""

from __future__ import annotations

import os

import pytest

from tasks import clients
from tasks.azureml.endpoint import update_tags
from tasks.rollout.lock import LOCK_TAG, me
from tests.rollout_support import fast_env, knobs, live_deployments, report, run_in_process, steps


@pytest.fixture(scope="module")
def serving(emulator, prefect_api, tmp_path_factory):
    """An endpoint with blue promoted: (env, ml client)."""
    endpoint = f"faults-{os.getpid()}"
    env = fast_env(emulator.state_dir, tmp_path_factory.mktemp("reports"), endpoint)
    with pytest.MonkeyPatch.context() as mp:
        status, result = run_in_process(mp, env)
    assert status == "completed" and result["new"] == "blue", result
    return env, clients.ml_client(emulator.settings())


def serving_colour(ml, endpoint: str) -> str:
    traffic, _ = live_deployments(ml, endpoint)
    return next(name for name, share in traffic.items() if share == 100)


def rolled_back(monkeypatch, serving, **extra: str) -> tuple[dict, str]:
    """Run a faulty rollout; assert the old colour alone serves 100 % after it; return (report, reason)."""
    env, ml = serving
    endpoint = env["R1_ENDPOINT_NAME"]
    old = serving_colour(ml, endpoint)
    status, err = run_in_process(monkeypatch, {**env, **extra})
    assert status == "failed" and type(err).__name__ == "RolledBack", err
    assert live_deployments(ml, endpoint) == ({old: 100}, [old])
    record = report(err)
    assert record["outcome"] == "rolled back" and record["reason"] == str(err)
    assert ("rollback", "ok") in steps(record)
    return record, str(err)


def test_never_ready_rolls_back_with_the_logs(monkeypatch, serving):
    record, reason = rolled_back(monkeypatch, serving, R1_ENVIRONMENT_VARIABLES=knobs(never_ready="true"),
                                 R1_PROBES__READINESS__FAILURE_THRESHOLD="5")
    assert "green" in reason and ("Failed" in reason or "not ready" in reason)
    assert "smoke" not in dict(steps(record))
    assert record["new_colour_logs"].strip()


def test_error_rate_in_the_new_colour_is_caught_by_the_load_gate(monkeypatch, serving):
    # seed 0: the first three draws (the smoke test) pass, then about 30 % of requests fail
    record, reason = rolled_back(monkeypatch, serving, R1_ENVIRONMENT_VARIABLES=knobs(error_rate=0.3, seed=0))
    assert reason.startswith("load gate on green") and "error rate" in reason
    assert ("load-gate", "failed") in steps(record)
    assert not any(step.startswith("shift") for step, _ in steps(record))


def test_latency_spike_is_caught_during_a_traffic_step(monkeypatch, serving):
    # smoke (3) + load gate (2 warm-up + 12) pass; from the 21st generation every first token is late
    record, reason = rolled_back(monkeypatch, serving,
                                 R1_ENVIRONMENT_VARIABLES=knobs(spike_after=20, spike_ms=1200),
                                 R1_SLO__TTFT_P95_MS="500", R1_BAKE_SECONDS="2.5")
    assert ("load-gate", "ok") in steps(record)
    assert ("shift 25 %", "failed") in steps(record)
    assert reason.startswith("at 25 %: green") and "TTFT" in reason.upper()


def test_a_held_lock_refuses_before_any_change(monkeypatch, serving):
    env, ml = serving
    endpoint = env["R1_ENDPOINT_NAME"]
    before = live_deployments(ml, endpoint)
    update_tags(ml, endpoint, {LOCK_TAG: me("someone-else").encode()})  # this live process holds it
    try:
        status, err = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=9)})
    finally:
        update_tags(ml, endpoint, {}, remove=(LOCK_TAG,))
    assert status == "failed" and type(err).__name__ == "Refused", err
    assert "someone-else" in str(err)
    assert live_deployments(ml, endpoint) == before
    assert report(err)["outcome"] == "refused"


def test_transient_arm_throttling_and_outages_are_retried(monkeypatch, serving, emulator):
    env, ml = serving
    endpoint = env["R1_ENDPOINT_NAME"]
    old = serving_colour(ml, endpoint)
    emulator.set_faults(error_rate=0.2, statuses=[429, 503], retry_after=0, seed=1)
    try:
        status, result = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=11)})
        faults = emulator.admin("GET", "/_emulator/faults").json()
    finally:
        emulator.admin("DELETE", "/_emulator/faults")
    assert faults["error_rate"] == 0.2
    assert status == "completed", result
    assert result["outcome"] == "promoted" and result["old"] == old
    assert live_deployments(ml, endpoint) == ({result["new"]: 100}, [result["new"]])


def test_quota_exhausted_rolls_back(fresh_emulator, prefect_api, monkeypatch, tmp_path):
    """Default quota: two single-A100 instances. Blue takes both, so green cannot be placed."""
    env = fast_env(fresh_emulator.state_dir, tmp_path / "reports", "quota", R1_INSTANCE_COUNT="2",
                   R1_AUTOSCALE__ENABLED="false")
    status, result = run_in_process(monkeypatch, env)
    assert status == "completed" and result["new"] == "blue", result
    ml = clients.ml_client(fresh_emulator.settings())
    status, err = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=5)})
    assert status == "failed" and type(err).__name__ == "RolledBack", err
    assert "quota" in str(err).lower()
    assert live_deployments(ml, "quota") == ({"blue": 100}, ["blue"])
    assert report(err)["reason"] == str(err)
