"""status against the emulator: after a rollout it reports what serves and is in sync; a changed setting is drift
that names what a rollout would do, and the r1.status.drift event is emitted; the lock holder is shown; a missing
endpoint is drift "a rollout would create it"; the command line exits 0 either way."""

from __future__ import annotations

import json
import time

from prefect.events.clients import AssertingEventsClient
from prefect.testing.fixtures import asserting_events_worker  # noqa: F401  (a fixture: the events sent, in order)

from flows.status import DRIFT_EVENT, main, status
from tasks.azureml.endpoint import update_tags
from tasks.cli import EXIT_OK
from tasks.rollout.lock import LOCK_TAG, Holder
from tasks.rollout.tags import IMAGE_TAG
from tasks.status.drift import NO_BUILD
from tests.rollout_support import FAKE_BASE, fast_env, run_in_process


def drift_events(worker) -> list:
    worker.wait_until_empty()  # (drain would stop the worker)
    return [e for e in AssertingEventsClient.last.events if e.event == DRIFT_EVENT]


def run_status(monkeypatch, **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = status(return_state=True).result(raise_on_failure=False)
    assert isinstance(result, dict), result
    return result


def test_in_sync_after_a_rollout_then_drift_when_a_setting_changes(
        emulator, ml, prefect_api, monkeypatch, tmp_path, unique_name, asserting_events_worker):  # noqa: F811
    endpoint = unique_name("status")
    env = fast_env(emulator.state_dir, tmp_path / "reports", endpoint)
    outcome, promoted = run_in_process(monkeypatch, env)
    assert outcome == "completed" and promoted["outcome"] == "promoted", promoted
    before = len(drift_events(asserting_events_worker))

    synced = run_status(monkeypatch)
    assert (synced["outcome"], synced["drift"], synced["findings"]) == ("in sync", False, [])
    assert synced["plan"].startswith("no-op: blue already serves this spec at 100 %")
    assert synced["traffic"] == {"blue": 100} and synced["mirror"] == {}
    (blue,) = synced["deployments"]
    tags = ml.online_deployments.get("blue", endpoint).tags
    assert blue["image"] == tags[IMAGE_TAG] == synced["desired_image"] and "@sha256:" in blue["image"]
    assert (blue["spec_hash"], blue["instance_count"], blue["provisioning_state"]) == (tags["r1-spec-hash"], 1,
                                                                                      "Succeeded")
    assert blue["autoscale"] == {"minimum": 1, "maximum": 3, "default": 1, "enabled": True}
    assert synced["last_rollout"]["outcome"] == "promoted" and synced["last_rollout"]["new"] == "blue"
    assert synced["lock"] is None
    report = json.loads((tmp_path / synced["report_dir"] / "status.json").read_text())
    assert report["drift"] is False and report["deployments"][0]["spec_hash"] == tags["r1-spec-hash"]
    assert len(drift_events(asserting_events_worker)) == before  # in sync: no event

    update_tags(ml, endpoint, {LOCK_TAG: Holder("rollout9", "elsewhere", 77, time.time() + 600).encode()})
    drifted = run_status(monkeypatch, R1_INSTANCE_COUNT="2", R1_AUTOSCALE__MAXIMUM="5")
    assert drifted["outcome"] == "drift" and drifted["drift"] is True
    assert drifted["lock"].startswith("run rollout9 on elsewhere (pid 77)")
    assert any(f.startswith("a rollout would stage green and shift traffic to it: blue serves 100 %")
               for f in drifted["findings"]), drifted["findings"]
    assert any("autoscale of blue is 1-3 (default 1), the settings say 1-5 (default 1)" in f
               for f in drifted["findings"])
    (event,) = drift_events(asserting_events_worker)[before:]
    assert event.resource.id == f"r1.endpoint.{endpoint}"
    assert event.payload["findings"] == drifted["findings"] and event.payload["plan"] == drifted["plan"]
    assert ml.online_deployments.get("blue", endpoint).instance_count == 1  # status changed nothing

    other_base = FAKE_BASE.split("@")[0] + "@sha256:" + "1" * 64
    unbuilt = run_status(monkeypatch, R1_INSTANCE_COUNT="1", R1_AUTOSCALE__MAXIMUM="3", R1_BASE_IMAGE=other_base)
    assert unbuilt["findings"] == [NO_BUILD]
    assert unbuilt["desired_image"] is None


def test_missing_endpoint_is_drift_and_exit_0(emulator, prefect_api, monkeypatch, tmp_path, unique_name, capsys):
    for name, value in fast_env(emulator.state_dir, tmp_path / "reports", unique_name("absent")).items():
        monkeypatch.setenv(name, value)
    assert main(["--json"]) == EXIT_OK
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome["exists"] is False and outcome["drift"] is True
    assert outcome["findings"] == ["the endpoint does not exist: a rollout would create it"]
    assert main([]) == EXIT_OK
    text = capsys.readouterr().out
    assert "does not exist" in text and "DRIFT: the endpoint does not exist: a rollout would create it" in text
