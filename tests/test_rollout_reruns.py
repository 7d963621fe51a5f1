"""Re-runs after a kill mid-shift, on the emulator's fake engine: the state a killed rollout leaves behind
(the new colour serving part of the traffic) is built with the SDK, then the flow runs over it."""

from __future__ import annotations

from tasks.azureml.deployment import desired_deployment
from tasks.azureml.endpoint import set_traffic
from tasks.azureml.environment import find_build
from tasks.image.context import build_context
from tasks.rollout.steps import Refused
from tasks.settings import load_settings
from tests.rollout_support import fast_env, knobs, live_deployments, report, run_in_process, steps


def killed_mid_shift(ml, monkeypatch, env: dict[str, str], green_share: int) -> None:
    """Blue promoted (seed 1), then green (the spec of ``env``) staged and at ``green_share`` % when the run died."""
    status, first = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=1)})
    assert status == "completed" and first["new"] == "blue", first
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    pinned = find_build(ml, build_context(s).hash).image  # what the first rollout built
    ml.online_deployments.begin_create_or_update(desired_deployment(s, "green", pinned)).result()
    set_traffic(ml, s.endpoint_name, {"blue": 100 - green_share, "green": green_share})


def test_a_changed_spec_after_a_kill_restores_the_old_colour_first_and_promotes(
        emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("respec")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint)
    killed_mid_shift(ml, monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=3)}, green_share=25)

    status, result = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=4)})
    assert status == "completed", result
    assert (result["outcome"], result["new"], result["old"]) == ("promoted", "green", "blue")
    record = report(result)
    plan = next(e for e in record["events"] if e["step"] == "plan")
    assert "green, which still serves 25 %" in plan["detail"] and "blue goes back to 100 % first" in plan["detail"]
    stage = next(e for e in record["events"] if e["step"] == "stage")
    assert stage["status"] == "ok" and stage["traffic"] == {"blue": 100}  # green replaced, at 0 %
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])


def test_a_resumed_shift_continues_from_the_live_split(emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("resume")
    env = {**fast_env(emulator.state_dir, tmp_path / "reports", endpoint), "R1_ENVIRONMENT_VARIABLES": knobs(seed=3),
           "R1_TRAFFIC_STEPS": "[25, 50, 100]"}
    killed_mid_shift(ml, monkeypatch, env, green_share=50)

    status, result = run_in_process(monkeypatch, env)  # same spec: resume
    assert status == "completed", result
    assert (result["outcome"], result["new"]) == ("promoted", "green")
    judged = [(step, e["traffic"]) for e in report(result)["events"]
              for step in [e["step"]] if step.startswith("shift") and e["status"] == "ok"]
    assert judged == [("shift 50 %", {"green": 50, "blue": 50}), ("shift 100 %", {"green": 100, "blue": 0})]
    assert ("stage", "skipped") in steps(report(result))
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])


def test_settings_under_which_no_bake_can_be_judged_are_refused_before_anything(
        emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("thin")
    env = {**fast_env(emulator.state_dir, tmp_path / "reports", endpoint), "R1_BAKE_SECONDS": "2",
           "R1_LOAD_GATE__BAKE_RATE": "4", "R1_SLO__MIN_REQUESTS": "20"}
    status, err = run_in_process(monkeypatch, env)
    assert status == "failed" and isinstance(err, Refused), err
    assert "R1_BAKE_SECONDS=2" in str(err) and "R1_LOAD_GATE__BAKE_RATE=4" in str(err)
    assert endpoint not in {e.name for e in ml.online_endpoints.list()}  # nothing was created
