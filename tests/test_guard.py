"""The guard flow on the emulator's fake engine: a clean window retires the warm colour (refused while a rollout
holds the lock), a latency spike on the promoted colour is a breach (the warm colour stays for the rollback),
nothing to guard without a warm colour."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from flows.guard import guard
from tasks.azureml.endpoint import update_tags
from tasks.guard.steps import Breached
from tasks.rollout.lock import LOCK_TAG, Holder
from tasks.rollout.steps import Refused
from tasks.rollout.tags import PREVIOUS_TAG
from tests.guard_support import GUARD, IMAGE_A, IMAGE_B, SPIKE, live_load
from tests.rollout_support import REPO_ROOT, cli_env, fast_env, knobs, live_deployments, run_in_process


def promote_over_warm(monkeypatch, emulator, tmp_path, endpoint: str, **green_knobs) -> dict[str, str]:
    """Blue on image A, then green on image B (with fake engine knobs) promoted with blue kept warm; the settings."""
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint, R1_IMAGE=IMAGE_A, R1_KEEP_OLD_WARM="true",
                   **GUARD)
    assert run_in_process(monkeypatch, env)[0] == "completed"
    env = {**env, "R1_IMAGE": IMAGE_B, **({"R1_ENVIRONMENT_VARIABLES": knobs(**green_knobs)} if green_knobs else {})}
    status, promoted = run_in_process(monkeypatch, env)
    assert status == "completed" and (promoted["new"], promoted["old"]) == ("green", "blue"), promoted
    return env


def run_guard(**parameters):
    return guard(return_state=True, **parameters).result(raise_on_failure=False)


def test_a_clean_window_retires_the_warm_colour_unless_a_rollout_holds_the_endpoint(
        emulator, prefect_api, monkeypatch, tmp_path, unique_name, ml):
    endpoint = unique_name("gd-clean")
    promote_over_warm(monkeypatch, emulator, tmp_path, endpoint)
    other = Holder("someone", "another-host", 1, time.time() + 3600)
    update_tags(ml, endpoint, {LOCK_TAG: other.encode()})
    refused = run_guard(minutes=0, interval_seconds=1)
    assert isinstance(refused, Refused) and "holds the endpoint" in str(refused), refused
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["blue", "green"])  # nothing deleted
    update_tags(ml, endpoint, {}, remove=(LOCK_TAG,))

    with live_load(ml, emulator.settings(endpoint_name=endpoint), rate=20, seconds=60) as load:
        monkeypatch.setenv("R1_GUARD__MINUTES", "0.1")  # a 6 s window, a check every 3 s
        done = run_guard(interval_seconds=3)
    assert load.records(), "the load reached the endpoint"
    assert isinstance(done, dict), done
    assert (done["outcome"], done["serving"], done["warm"]) == ("clean", "green", "blue")
    assert done["verdicts"] == {"pass": 2} and "blue deleted" in done["reason"]
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["green"])
    tags = ml.online_endpoints.get(endpoint).tags
    assert LOCK_TAG not in tags and PREVIOUS_TAG in tags  # a rollback can still stage blue's spec again
    folder = Path(done["report_dir"])
    recorded = json.loads((folder / "guard.json").read_text())
    assert [c["verdict"] for c in recorded["checks"]] == ["pass", "pass"]
    assert all(c["requests"] >= 5 and c["deployment"] == "green" for c in recorded["checks"])
    assert (folder / "guard.png").stat().st_size > 0

    again = run_guard(minutes=0)  # the warm colour is gone: nothing to guard, and the report says why
    assert again["outcome"] == "nothing to guard" and "no other colour is kept warm" in again["reason"]


def test_a_latency_spike_on_the_promoted_colour_is_a_breach(emulator, prefect_api, monkeypatch, tmp_path,
                                                            unique_name, ml):
    endpoint = unique_name("gd-spike")
    promote_over_warm(monkeypatch, emulator, tmp_path, endpoint, **SPIKE)
    with live_load(ml, emulator.settings(endpoint_name=endpoint), rate=40, seconds=120):
        breached = run_guard(minutes=1.5, interval_seconds=3)
    assert isinstance(breached, Breached), breached
    assert "green breached" in str(breached) and "request latency p95" in str(breached)
    # the guard only emits the event: the rollback (automation) puts blue back, so blue is still warm
    assert live_deployments(ml, endpoint) == ({"green": 100}, ["blue", "green"])
    recorded = json.loads((Path(breached.report_dir) / "guard.json").read_text())
    assert recorded["outcome"] == "breach" and recorded["event"] == "r1.guard.breach"
    assert recorded["checks"][-1]["verdict"] == "fail" and recorded["checks"][-1]["latency_p95_ms"] > 800


def test_cli_nothing_to_guard_exits_0_and_bad_flags_exit_2(emulator, tmp_path, unique_name, endpoint):
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint)
    run = lambda *args: subprocess.run([sys.executable, "-m", "flows.guard", *args], cwd=REPO_ROOT,  # noqa: E731
                                       env=cli_env(env, tmp_path / "prefect"), capture_output=True, text=True,
                                       timeout=300)
    done = run("--minutes", "0", "--json")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["outcome"] == "nothing to guard" and "no colour" in outcome["reason"]
    bad = run("--interval-seconds", "0")
    assert bad.returncode == 2 and "R1_GUARD__INTERVAL_SECONDS" in bad.stderr
