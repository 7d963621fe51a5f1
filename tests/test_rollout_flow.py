"""The rollout flow end to end on the emulator's fake engine: promote, alternate colours, no-op."""

from __future__ import annotations

from tasks.rollout.reconcile import SPEC_HASH_TAG
from tasks.rollout.tags import IMAGE_TAG, MODEL_TAG, last_rollout, previous
from tasks.settings import Settings
from tests.rollout_support import fast_env, knobs, live_deployments, report, run_in_process, steps


def test_blue_then_green_then_blue_then_noop(emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("happy")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint)

    status, first = run_in_process(monkeypatch, env)
    assert status == "completed", first
    assert (first["outcome"], first["new"], first["old"]) == ("promoted", "blue", None)
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])

    status, second = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=3)})
    assert status == "completed", second
    assert (second["outcome"], second["new"], second["old"]) == ("promoted", "green", "blue")
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])
    shifts = [e for e in report(second)["events"] if e["step"].startswith("shift") and e["status"] != "info"]
    assert [e["traffic"] for e in shifts] == [{"green": 25, "blue": 75}, {"green": 100, "blue": 0}]
    assert all(e["status"] == "ok" for e in shifts)

    # this time with a mirror phase first: 20 % of live traffic copied to blue while green serves
    status, third = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=4),
                                                 "R1_MIRROR_PERCENT": "20"})
    assert status == "completed", third
    assert (third["new"], third["old"]) == ("blue", "green")
    mirror = next(e for e in report(third)["events"] if e["step"] == "mirror")
    assert mirror["status"] == "ok" and mirror["traffic"] == {"green": 100}
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])

    status, fourth = run_in_process(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=4)})
    assert status == "completed", fourth
    assert fourth["outcome"] == "no-op"
    assert ("stage", "ok") not in steps(report(fourth))
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])


def test_old_colour_kept_warm_then_retired_by_a_later_run(emulator, prefect_api, monkeypatch, tmp_path, unique_name,
                                                          ml):
    endpoint = unique_name("warm")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_KEEP_OLD_WARM="true")
    assert run_in_process(monkeypatch, env)[0] == "completed"
    change = {**env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=7)}

    status, promoted = run_in_process(monkeypatch, change)
    assert status == "completed" and promoted["new"] == "green", promoted
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["blue", "green"])
    assert ("retire", "skipped") in steps(report(promoted))
    # what the day-two flows read back: the colour rolled away from, and the outcome, on the endpoint itself
    blue = ml.online_deployments.get(name="blue", endpoint_name=endpoint).tags
    tags = ml.online_endpoints.get(endpoint).tags
    assert previous(tags) is not None and previous(tags).colour == "blue"
    assert (previous(tags).image, previous(tags).spec_hash) == (blue[IMAGE_TAG], blue[SPEC_HASH_TAG])
    assert previous(tags).model == env.get("R1_MODEL_ASSET", Settings().model_asset) == blue[MODEL_TAG]
    assert (last_rollout(tags).outcome, last_rollout(tags).new, last_rollout(tags).old) == ("promoted", "green", "blue")

    status, again = run_in_process(monkeypatch, change)
    assert status == "completed" and again["outcome"] == "no-op", again
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["blue", "green"])

    status, finished = run_in_process(monkeypatch, {**change, "R1_KEEP_OLD_WARM": "false"})
    assert status == "completed" and finished["outcome"] == "promoted", finished
    assert "left over" in next(e["detail"] for e in report(finished)["events"] if e["step"] == "plan")
    assert ("retire", "ok") in steps(report(finished)) and ("stage", "ok") not in steps(report(finished))
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])
