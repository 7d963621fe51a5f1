"""The rollout's record: a timeline of steps with the traffic split and SLO verdicts, kept on disk as it
grows (a killed run still leaves its story), then a markdown report, a JSON file and a PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tasks.image.report import log_section
from tasks.loadtest.record import RequestRecord
from tasks.reports import publish_markdown, publish_table, write_json, write_text


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

    def add(self, step: str, status: str, detail: str, traffic: dict[str, int] | None = None,
            verdict: dict[str, Any] | None = None) -> Event:
        event = Event(round(time.monotonic() - self.started, 3), step, status, detail, dict(traffic or {}), verdict)
        self.events.append(event)
        self.save()
        return event

    def record(self, result: StepLike) -> Event:
        """One step's result as a timeline line; its evidence (smoke checks, logs, ...) goes into the record."""
        self.extra.update(result.evidence)
        return self.add(result.step, result.status, result.detail, result.traffic, result.verdict)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "events": [asdict(e) for e in self.events], **self.extra}

    def save(self) -> Path:
        return write_json(self.folder / "rollout.json", self.as_dict())


def markdown(timeline: Timeline, outcome: str, reason: str) -> str:
    lines = [
        f"# Rollout {timeline.run_id}: {outcome}",
        "",
        reason,
        "",
        "| t (s) | step | status | traffic | detail |",
        "|---:|---|---|---|---|",
    ]
    for e in timeline.events:
        split = ", ".join(f"{k} {v} %" for k, v in sorted(e.traffic.items())) or "-"
        detail = e.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {e.t_s:.1f} | {e.step} | {e.status} | {split} | {detail} |")
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def publish(timeline: Timeline, outcome: str, reason: str) -> str:
    """Write the markdown and JSON, and publish them as Prefect artifacts; returns the markdown."""
    text = markdown(timeline, outcome, reason)
    timeline.extra.update(outcome=outcome, reason=reason)
    timeline.save()
    write_text(timeline.folder / "rollout.md", text)
    publish_markdown(f"rollout-{timeline.run_id}", text, description=f"Rollout {outcome}")
    publish_table(
        f"rollout-{timeline.run_id}-timeline",
        [{"t_s": e.t_s, "step": e.step, "status": e.status, "traffic": str(e.traffic), "detail": e.detail}
         for e in timeline.events],
        description="Rollout timeline",
    )
    return text


def recorded_outcome(reports_dir: Path, run_id: str) -> dict[str, Any] | None:
    """What a run's own report says happened (outcome, reason, report_dir), for when Prefect's state lost it."""
    for path in sorted(reports_dir.glob(f"rollout-*-{run_id}/rollout.json")) if run_id else []:
        record = json.loads(path.read_text())
        if record.get("outcome"):
            return {"outcome": record["outcome"], "reason": record.get("reason", ""), "report_dir": str(path.parent)}
    return None
