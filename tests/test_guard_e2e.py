"""The guard as prefect.yaml wires it, on a real Prefect server (services on: automations need them) and a process
worker: a promotion that keeps blue warm emits ``r1.rollout.promoted`` (kept-warm) → the automation runs ``guard``;
a latency spike on green → ``r1.guard.breach`` → the automation runs ``rollback`` with the breach as its reason →
blue serves 100 % again."""

from __future__ import annotations

import pytest

from tests.guard_support import GUARD, IMAGE_A, IMAGE_B, SPIKE, live_load
from tests.prefect_server_support import deployed_project, run_deployment, runs_of, wait_until
from tests.rollout_support import fast_env, knobs, live_deployments

WORKER = {"R1_KEEP_OLD_WARM": "true", "R1_GUARD__MINUTES": "3", "R1_GUARD__INTERVAL_SECONDS": "3", **GUARD}


@pytest.mark.slow
def test_breach_event_runs_the_rollback_automation_and_blue_serves_again(emulator, tmp_path, unique_name, ml):
    endpoint = unique_name("gd-e2e")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, **WORKER)
    with deployed_project(tmp_path, env, services=True) as server:
        assert run_deployment(server, "rollout/rollout", {"image": IMAGE_A})["state"]["type"] == "COMPLETED"
        promoted = run_deployment(server, "rollout/rollout", {"image": IMAGE_B},
                                  {"R1_ENVIRONMENT_VARIABLES": knobs(**SPIKE)})
        assert promoted["state"]["type"] == "COMPLETED", promoted["state"]
        assert live_deployments(ml, endpoint) == ({"green": 100}, ["blue", "green"])
        guarding = wait_until(lambda: runs_of(server, "guard/guard"), 120, "the promotion to start the guard")
        assert len(guarding) == 1  # blue's first rollout kept nothing warm: no guard for it

        with live_load(ml, emulator.settings(endpoint_name=endpoint), rate=40, seconds=240):
            wait_until(lambda: live_deployments(ml, endpoint)[0] == {"blue": 100}, 240, "blue back at 100 %")

        guarded = server.wait_finished(guarding[0]["id"], 60)
        assert guarded["state"]["type"] == "FAILED" and "green breached" in guarded["state"]["message"]
        (rolled_back,) = runs_of(server, "rollback/rollback")
        rolled_back = server.wait_finished(rolled_back["id"], 120)
        assert rolled_back["state"]["type"] == "COMPLETED", rolled_back["state"]
        assert rolled_back["parameters"]["reason"].startswith("guard: green breached: request latency p95")
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue", "green"])  # green kept for forensics
