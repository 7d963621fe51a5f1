"""What a rollout leaves on its flow run for people to look at, read back through the Prefect API: the report
with the chart inlined, the SLO verdict table (one row per check), a progress bar moved while it waited, and
a log that tells the timeline line by line. Then the same for a rollout the load gate rolls back."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tasks.rollout import progress
from tasks.rollout.progress import Progress, watched_sleep
from tests.rollout_support import fast_env, knobs, run_flow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """The run's artifacts by key (the latest version of each)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
    return {a.key: a for a in sorted(found, key=lambda a: a.created)}


def log_lines(flow_run_id: UUID) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # the run's logs are sent in the background
    with get_client(sync_client=True) as client:
        return [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[flow_run_id])))]


def rollout_with_progress_spy(monkeypatch, env: dict[str, str]) -> tuple[Any, list[tuple[float, str]]]:
    """Run the flow, noting every move of its progress bar: (final state, [(percent, description), ...])."""
    moves: list[tuple[float, str]] = []
    real = progress.publish_progress

    def spy(key: str, percent: float, description: str, artifact_id: UUID | None = None) -> UUID | None:
        moves.append((percent, description))
        return real(key, percent, description, artifact_id)

    monkeypatch.setattr(progress, "publish_progress", spy)
    return run_flow(monkeypatch, env), moves


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


def test_a_promotion_publishes_report_chart_slo_table_progress_and_logs(emulator, prefect_api, monkeypatch,
                                                                       reports, unique_name):
    state, moves = rollout_with_progress_spy(monkeypatch, fast_env(emulator.state_dir, reports, unique_name("art")))
    result = state.result()
    run_uuid = state.state_details.flow_run_id
    run_id = str(run_uuid)[:8]
    found = artifacts(run_uuid)
    assert {f"rollout-{run_id}", f"rollout-{run_id}-timeline", f"rollout-{run_id}-slo",
            f"rollout-{run_id}-progress"} <= set(found)
    folder = Path(result["report_dir"])
    events = json.loads((folder / "rollout.json").read_text())["events"]

    # the report: the chart inlined as a PNG data URI (the UI has no file to link to); on disk, a link
    report = found[f"rollout-{run_id}"].data
    assert report.startswith(f"# Rollout {run_id}: promoted") and "## SLO verdicts" in report
    inlined = report.split("](data:image/png;base64,", 1)[1].split(")", 1)[0]
    assert base64.b64decode(inlined) == (folder / "rollout.png").read_bytes()
    assert (folder / "rollout.png").read_bytes().startswith(PNG_MAGIC)
    assert "](rollout.png)" in (folder / "rollout.md").read_text()

    # the SLO table: one row per check of the load gate and of the bake, as the record judged them
    rows = json.loads(found[f"rollout-{run_id}-slo"].data)
    checks = [c for e in events if e["verdict"]
              for v in ([e["verdict"]] if "status" in e["verdict"] else e["verdict"].values()) for c in v["checks"]]
    assert len(rows) == len(checks) > 0
    assert {r["step"] for r in rows} == {"load-gate", "shift 100 %"}
    assert {r["metric"] for r in rows} >= {"error rate", "TTFT p95", "goodput"}
    assert all(r["pass"] is True and isinstance(r["observed"], float) and isinstance(r["threshold"], float)
               for r in rows)
    assert {r["deployment"] for r in rows if r["step"] == "shift 100 %"} == {"blue"}

    # the progress bar: moved while waiting for ready and while baking, never back, ended full
    final = found[f"rollout-{run_id}-progress"]
    assert (final.type, final.data, final.description) == ("progress", 100.0, "rollout promoted")
    descriptions = [d for _, d in moves]
    assert any(d.startswith("ready: waiting") for d in descriptions)
    assert any(d.startswith("shift 100 %: waiting") for d in descriptions)
    percents = [p for p, _ in moves]
    assert percents == sorted(percents) and 0 < percents[len(percents) // 2] < 100

    # the log tab tells the timeline, line by line
    logged = log_lines(run_uuid)
    assert all(any(m == f"{e['step']}: {e['status']} {e['detail']}" for m in logged) for e in events)


def test_a_rollback_publishes_the_failed_check_and_fills_the_progress_bar(emulator, prefect_api, monkeypatch,
                                                                         reports, unique_name):
    env = fast_env(emulator.state_dir, reports, unique_name("artfail"))
    assert run_flow(monkeypatch, env).is_completed()
    # seed 0: the first three draws (the smoke test) pass, then about 30 % of requests fail
    state, _ = rollout_with_progress_spy(monkeypatch, {**env, "R1_ENVIRONMENT_VARIABLES": knobs(error_rate=0.3,
                                                                                               seed=0)})
    assert state.is_failed()
    run_id = str(state.state_details.flow_run_id)[:8]
    found = artifacts(state.state_details.flow_run_id)
    rows = json.loads(found[f"rollout-{run_id}-slo"].data)
    failed = [r for r in rows if not r["pass"]]
    assert failed and {(r["step"], r["metric"]) for r in failed} >= {("load-gate", "error rate")}
    assert found[f"rollout-{run_id}"].data.startswith(f"# Rollout {run_id}: rolled back")
    final = found[f"rollout-{run_id}-progress"]
    assert (final.data, final.description) == (100.0, "rollout rolled back")


# The progress bar's arithmetic, without a server ------------------------------------------------------
def test_progress_moves_through_the_phases_and_never_back(monkeypatch):
    shown: list[tuple[float, str]] = []
    monkeypatch.setattr(progress, "publish_progress", lambda key, p, d, artifact_id=None: shown.append((p, d)))
    bar = Progress("k")
    bar.passed("preflight", "ok")  # before the plan: no scale yet
    bar.expect(["stage", "ready", "shift 100 %"])
    bar.waiting("ready", 30, 60)
    bar.passed("ready", "ok")
    bar.passed("shift 100 %", "info")  # "baking": says where, fills nothing
    bar.waiting("shift 100 %", 99, 10)  # an extended bake never fills its phase
    bar.passed("rollback", "ok")  # not a phase: no move back
    bar.finish("rolled back")
    assert shown == [(0.0, "preflight: ok"), (0.0, "planned: stage, ready, shift 100 %"),
                     (50.0, "ready: waiting, 30 s of up to 60 s"), (66.7, "ready: ok"), (66.7, "shift 100 %: info"),
                     (98.3, "shift 100 %: waiting, 99 s of up to 10 s"), (98.3, "rollback: ok"),
                     (100.0, "rollout rolled back")]


def test_a_watched_sleep_reports_the_time_waited_in_ticks():
    heard: list[tuple[str, float, float]] = []
    sleep = watched_sleep("ready", 60, lambda *args: heard.append(args), tick_s=0.05)
    sleep(0.12)
    sleep(0.05)  # a second poll: the time waited counts from the first
    assert [(step, budget) for step, _, budget in heard] == [("ready", 60)] * len(heard)
    waited = [w for _, w, _ in heard]
    assert len(heard) >= 4 and waited == sorted(waited) and 0.1 <= waited[-1] < 1
