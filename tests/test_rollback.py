"""Rollback on the emulator's fake engine: from a warm colour in one traffic update, from a retired one through
the rollout's gates, and refused (no reason, a rollout holding the lock, nothing to roll back to)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from flows.rollback import rollback
from tasks.azureml.endpoint import update_tags
from tasks.cli import InputError
from tasks.rollout.lock import LOCK_TAG, Holder
from tasks.rollout.steps import Refused
from tasks.rollout.tags import IMAGE_TAG, PREVIOUS_TAG, previous
from tests.rollout_support import REPO_ROOT, cli_env, fast_env, live_deployments, report, run_in_process, steps

IMAGE_A = "local/fake-engine@sha256:" + "a" * 64
IMAGE_B = "local/fake-engine@sha256:" + "b" * 64
IMAGE_C = "local/fake-engine@sha256:" + "c" * 64


def two_colours(monkeypatch, emulator, tmp_path, endpoint: str, keep_old_warm: bool) -> dict[str, str]:
    """Blue runs image A, then green image B is promoted over it; returns the settings of that second rollout."""
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_IMAGE=IMAGE_A,
                   R1_KEEP_OLD_WARM=str(keep_old_warm).lower())
    assert run_in_process(monkeypatch, env)[0] == "completed"
    env = {**env, "R1_IMAGE": IMAGE_B}
    status, promoted = run_in_process(monkeypatch, env)
    assert status == "completed" and (promoted["new"], promoted["old"]) == ("green", "blue"), promoted
    return env


def run_rollback(**parameters):
    """The flow's result dict, or the exception it ended with."""
    return rollback(return_state=True, **parameters).result(raise_on_failure=False)


def test_rollback_from_warm_is_one_traffic_update_and_keeps_the_colour_rolled_away_from(
        emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("rb-warm")
    env = two_colours(monkeypatch, emulator, tmp_path, endpoint, keep_old_warm=True)
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["blue", "green"])

    done = run_rollback(reason="p95 regression after promotion")
    assert isinstance(done, dict), done
    assert (done["outcome"], done["case"], done["serving"]) == ("rolled back", "warm", "blue")
    assert (done["traffic_before"], done["traffic_after"]) == ({"green": 100}, {"blue": 100})
    assert done["seconds_to_100"] > 0 and "green kept at 0 %" in done["rolled_away"]
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue", "green"])  # green stays for forensics
    assert ml.online_deployments.get(name="blue", endpoint_name=endpoint).tags[IMAGE_TAG] == IMAGE_A
    recorded = json.loads((Path(done["report_dir"]) / "rollback.json").read_text())
    assert recorded["reason"] == "p95 regression after promotion" and recorded["traffic_after"] == {"blue": 100}
    assert LOCK_TAG not in ml.online_endpoints.get(endpoint).tags

    again = run_rollback(reason="the guard fired twice", delete_rolled_away=True)
    assert again["outcome"] == "nothing to do", again  # not a roll forward to the bad colour
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue", "green"])

    assert run_in_process(monkeypatch, {**env, "R1_IMAGE": IMAGE_C})[0] == "completed"  # green, image C
    deleted = run_rollback(reason="C is bad too", delete_rolled_away=True)
    assert (deleted["case"], deleted["rolled_away"]) == ("warm", "green deleted (delete_rolled_away)"), deleted
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue"])


def test_rollback_from_retired_stages_the_recorded_image_again_through_the_gates(
        emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("rb-retired")
    two_colours(monkeypatch, emulator, tmp_path, endpoint, keep_old_warm=False)
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])
    recorded = previous(ml.online_endpoints.get(endpoint).tags)

    done = run_rollback(reason="bad answers from the new model")
    assert isinstance(done, dict), done
    assert (done["outcome"], done["case"], done["serving"]) == ("rolled back", "restage", "blue")
    assert done["spec"] == f"staged spec {recorded.spec_hash} matches the recorded {recorded.spec_hash}"
    # the colour rolled away from stays at 0 % for forensics (the subflow runs with keep_old_warm)
    assert live_deployments(ml, endpoint) == ({"blue": 100}, ["blue", "green"])
    assert ml.online_deployments.get(name="blue", endpoint_name=endpoint).tags[IMAGE_TAG] == IMAGE_A
    gates = steps(report({"report_dir": done["rollout_report"]}))
    assert {("stage", "ok"), ("ready", "ok"), ("smoke", "ok"), ("load-gate", "ok")} <= set(gates), gates
    assert "green kept at 0 %" in done["rolled_away"]
    assert previous(ml.online_endpoints.get(endpoint).tags) == recorded  # a second rollback is a no-op
    assert run_rollback(reason="again")["outcome"] == "nothing to do"


def test_refused_without_a_reason(emulator, prefect_api, monkeypatch, tmp_path, endpoint, ml):
    monkeypatch.setenv("R1_EMULATOR_STATE_DIR", str(emulator.state_dir))
    monkeypatch.setenv("R1_ENDPOINT_NAME", endpoint)
    before = ml.online_endpoints.get(endpoint).tags
    assert isinstance(run_rollback(reason="   "), InputError)
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint)
    proc = subprocess.run([sys.executable, "-m", "flows.rollback", "--json"], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=cli_env(env, tmp_path / "prefect"), timeout=120)
    assert proc.returncode == 2 and "a reason is required" in proc.stderr
    assert ml.online_endpoints.get(endpoint).tags == before


def test_refused_while_a_rollout_holds_the_lock_and_with_nothing_to_roll_back(
        emulator, prefect_api, monkeypatch, tmp_path, endpoint, unique_name, ml):
    for name, value in fast_env(emulator.state_dir, tmp_path / "reports", endpoint).items():
        monkeypatch.setenv(name, value)
    holder = Holder("other-run", "another-host", 1, time.time() + 3600)
    update_tags(ml, endpoint, {LOCK_TAG: holder.encode()})
    locked = run_rollback(reason="now")
    assert isinstance(locked, Refused) and "other-run" in str(locked)
    assert ml.online_endpoints.get(endpoint).tags[LOCK_TAG] == holder.encode()  # the rollout's lock is untouched
    assert json.loads((Path(locked.report_dir) / "rollback.json").read_text())["outcome"] == "refused"

    update_tags(ml, endpoint, {}, remove=(LOCK_TAG,))
    nothing = run_rollback(reason="now")
    assert isinstance(nothing, Refused) and "serves 100 %" in str(nothing)
    tags = ml.online_endpoints.get(endpoint).tags
    assert LOCK_TAG not in tags and PREVIOUS_TAG not in tags

    monkeypatch.setenv("R1_ENDPOINT_NAME", unique_name("absent"))
    assert "does not exist" in str(run_rollback(reason="now"))
