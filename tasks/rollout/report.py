"""The rollout's record: a timeline of steps with the traffic split and SLO verdicts, kept on disk as it
grows (a killed run still leaves its story) and logged line by line (the run's log tab reads as the runbook),
then a markdown report with the chart, a JSON file, a PNG and, in a flow run, the artifacts people look at:
the report (chart inlined), the timeline and SLO verdict tables, and a progress bar moved while it runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tasks.image.report import log_section
from tasks.loadtest.record import RequestRecord
from tasks.reports import (markdown_table, png_data_uri, publish_markdown, publish_table, run_logger, save_png,
                           write_json, write_text)
from tasks.rollout.progress import Progress


class StepLike(Protocol):
    step: str
    status: str
    detail: str
    traffic: dict[str, int]
    verdict: dict[str, Any] | None
    evidence: dict[str, Any]


@dataclass
class Event:
    t_s: float
    step: str
    status: str  # ok | skipped | failed | info
    detail: str
    traffic: dict[str, int] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None


@dataclass
class Timeline:
    run_id: str
    folder: Path
    events: list[Event] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    progress: Progress = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.progress = Progress(f"rollout-{self.run_id}-progress")

    def add(self, step: str, status: str, detail: str, traffic: dict[str, int] | None = None,
            verdict: dict[str, Any] | None = None) -> Event:
        """One line of the story: kept on disk, logged to the run, and the progress bar moved past ``step``."""
        event = Event(round(time.monotonic() - self.started, 3), step, status, detail, dict(traffic or {}), verdict)
        self.events.append(event)
        self.save()
        run_logger("r1.rollout").info("%s: %s %s", step, status, detail)
        self.progress.passed(step, status)
        return event

    def record(self, result: StepLike) -> Event:
        """One step's result as a timeline line; its evidence (smoke checks, logs, ...) goes into the record."""
        self.extra.update(result.evidence)
        return self.add(result.step, result.status, result.detail, result.traffic, result.verdict)

    def waiting(self, step: str, waited_s: float, budget_s: float) -> None:
        """A long wait in ``step`` (readiness, a bake): the progress bar shows it."""
        self.progress.waiting(step, waited_s, budget_s)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "events": [asdict(e) for e in self.events], **self.extra}

    def save(self) -> Path:
        return write_json(self.folder / "rollout.json", self.as_dict())


def timeline_rows(timeline: Timeline) -> list[dict[str, Any]]:
    return [{"t (s)": f"{e.t_s:.1f}", "step": e.step, "status": e.status,
             "traffic": ", ".join(f"{k} {v} %" for k, v in sorted(e.traffic.items())) or "-", "detail": e.detail}
            for e in timeline.events]


def verdict_rows(timeline: Timeline) -> list[dict[str, Any]]:
    """One row per SLO check of every gate and bake (an inconclusive verdict: one row saying why), to be read
    as a table rather than squeezed into the timeline's detail cell."""
    rows = []
    for e in timeline.events:
        # the load gate judges the new colour alone (one verdict); a bake judges each serving deployment
        verdicts = {"-": e.verdict} if e.verdict and "status" in e.verdict else (e.verdict or {})
        for deployment, v in verdicts.items():
            checks = v["checks"] or [{"name": "requests", "measured": v["samples"], "limit": None, "ok": False,
                                      "reason": "; ".join(v["reasons"])}]
            rows += [{"step": e.step, "deployment": deployment, "metric": c["name"], "observed": _num(c["measured"]),
                      "threshold": _num(c["limit"]), "pass": c["ok"], "check": c["reason"]} for c in checks]
    return rows


def _num(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def markdown(timeline: Timeline, outcome: str, reason: str, chart_src: str | None = None) -> str:
    """The report: outcome, the chart first (``chart_src``: a file name or a data URI), timeline, SLO verdicts."""
    lines = [f"# Rollout {timeline.run_id}: {outcome}", "", reason, ""]
    if chart_src:
        lines += [f"![latency and traffic share during the rollout]({chart_src})", ""]
    lines += ["## Timeline", "", *markdown_table(timeline_rows(timeline))]
    if verdicts := verdict_rows(timeline):
        lines += ["", "## SLO verdicts", "", *markdown_table(verdicts)]
    lines += log_section(timeline.extra.get("image_build_log") or [])
    return "\n".join(lines) + "\n"


def plot(records: list[RequestRecord], shares: list[tuple[float, float]], new: str, path: Path) -> Path | None:
    """Latency of live requests by serving deployment, and the new colour's planned share, over time."""
    if not records and not shares:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    by_dep: dict[str, list[RequestRecord]] = {}
    for r in records:
        by_dep.setdefault(r.deployment or "(failed)", []).append(r)
    for name, group in sorted(by_dep.items()):
        ax1.scatter([r.sent_s for r in group], [r.e2e_s * 1000 for r in group], s=6, label=name)
    ax1.set_ylabel("end-to-end latency (ms)")
    ax1.legend(loc="upper left")
    ax1.set_title("Live traffic during the rollout")
    if shares:
        xs, ys = zip(*shares)
        ax2.step(xs, ys, where="post", label=f"{new} planned share")
    served = sorted(records, key=lambda r: r.sent_s)
    if served:
        window = min(len(served), max(5, len(served) // 20))  # smooth enough to read with few samples
        xs = [served[i].sent_s for i in range(window - 1, len(served))]
        ys = [100 * sum(r.deployment == new for r in served[i - window + 1 : i + 1]) / window
              for i in range(window - 1, len(served))]
        ax2.plot(xs, ys, alpha=0.6, label=f"{new} observed share (rolling {window})")
    ax2.set_ylabel("% of traffic")
    ax2.set_xlabel("seconds since the live load started")
    ax2.set_ylim(-5, 105)
    ax2.legend(loc="upper left")
    return save_png(fig, path)


def publish(timeline: Timeline, outcome: str, reason: str, chart: Path | None = None) -> str:
    """Write the markdown and JSON, publish the report (chart inlined: the UI has no file to link to), the
    timeline and SLO verdict tables, and fill the progress bar; returns the markdown written to disk."""
    text = markdown(timeline, outcome, reason, chart.name if chart else None)
    timeline.extra.update(outcome=outcome, reason=reason)
    timeline.save()
    write_text(timeline.folder / "rollout.md", text)
    publish_markdown(f"rollout-{timeline.run_id}", markdown(timeline, outcome, reason, chart and png_data_uri(chart)),
                     description=f"Rollout {outcome}")
    publish_table(f"rollout-{timeline.run_id}-timeline", timeline_rows(timeline), description="Rollout timeline")
    publish_table(f"rollout-{timeline.run_id}-slo", verdict_rows(timeline),
                  description="SLO verdicts: one row per check of each gate and bake")
    timeline.progress.finish(outcome)
    return text


def recorded_outcome(reports_dir: Path, run_id: str) -> dict[str, Any] | None:
    """What a run's own report says happened (outcome, reason, report_dir), for when Prefect's state lost it."""
    for path in sorted(reports_dir.glob(f"rollout-*-{run_id}/rollout.json")) if run_id else []:
        record = json.loads(path.read_text())
        if record.get("outcome"):
            return {"outcome": record["outcome"], "reason": record.get("reason", ""), "report_dir": str(path.parent)}
    return None
