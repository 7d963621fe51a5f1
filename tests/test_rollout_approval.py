"""The optional approval before 100 %: a Prefect pause with input; approved promotes, silence rolls back."""

from __future__ import annotations

import threading

from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from tasks import clients
from tasks.rollout.outcome import recorded_failure
from tasks.settings import load_settings
from tests.rollout_support import fast_env, knobs, live_deployments, report, run_flow, run_in_process, steps


def approve_when_paused(stop: threading.Event) -> None:
    """Act as the approver in the UI: resume the first paused rollout with approve=true."""
    while not stop.wait(0.2):
        with get_client(sync_client=True) as client:
            paused = [r for r in client.read_flow_runs() if r.state and r.state.is_paused()]
        for run in paused:
            resume_flow_run(run.id, run_input={"approve": True, "reason": "looks good"})
            return


def test_approval_promotes_and_silence_rolls_back(emulator, prefect_api, monkeypatch, tmp_path, unique_name):
    endpoint = unique_name("approve")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_REQUIRE_APPROVAL="true",
                   R1_APPROVAL_TIMEOUT_SECONDS="3")
    ml = clients.ml_client(emulator.settings())

    state = run_flow(monkeypatch, env)  # nobody answers: Prefect fails the run ("never resumed") ...
    assert state.is_failed()
    run_id = str(state.state_details.flow_run_id)[:8]
    err = recorded_failure(load_settings().reports_dir, run_id)  # ... after the flow rolled back and said why
    assert type(err).__name__ == "RolledBack" and "not approved in time" in str(err), err
    assert ("approval", "info") in steps(report(err)) and ("rollback", "ok") in steps(report(err))
    assert live_deployments(ml, endpoint) == ({}, [])

    stop = threading.Event()
    approver = threading.Thread(target=approve_when_paused, args=(stop,), daemon=True)
    approver.start()
    try:
        status, result = run_in_process(monkeypatch, {**env, "R1_APPROVAL_TIMEOUT_SECONDS": "120",
                                                      "R1_ENVIRONMENT_VARIABLES": knobs(seed=2)})
    finally:
        stop.set()
        approver.join()
    assert status == "completed" and result["outcome"] == "promoted", result
    assert ("approval", "ok") in steps(report(result))
    assert "looks good" in next(e["detail"] for e in report(result)["events"] if e["step"] == "approval"
                                and e["status"] == "ok")
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])
