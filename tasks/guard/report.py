"""The guard's report: a table artifact of every check, the run's JSON and markdown, and a PNG of latency p95 and
error rate per check against their limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.guard.judge import Limits
from tasks.guard.steps import Check
from tasks.reports import publish_table, save_png
from tasks.run_report import publish_run


def plot(checks: list[Check], limit: Limits, started: float, path: Path) -> Path | None:
    if not checks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c.at - started for c in checks]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(xs, [c.sample.latency_p95_ms for c in checks], marker="o", label="RequestLatency_P95")
    ax1.axhline(limit.latency_p95_ms, color="red", linestyle="--", label="limit")
    ax1.set_ylabel("request latency p95 (ms)")
    ax1.legend(loc="upper left")
    ax1.set_title(f"Guard of {checks[0].sample.deployment}: one point per check")
    rates = [100 * c.sample.errors / c.sample.requests if c.sample.requests else None for c in checks]
    ax2.plot(xs, rates, marker="o", label="error rate")
    ax2.axhline(100 * limit.max_error_rate, color="red", linestyle="--", label="limit")
    for x, c in zip(xs, checks):
        if c.verdict.status != "pass":
            ax2.annotate(c.verdict.status, (x, 0), fontsize=7, rotation=90)
    ax2.set_ylabel("errors (% of requests)")
    ax2.set_xlabel("seconds since the guard started")
    ax2.legend(loc="upper left")
    return save_png(fig, path)


def publish(folder: Path, record: dict[str, Any], checks: list[Check], limit: Limits, started: float) -> str:
    """Files and artifacts; returns the folder."""
    rows = [c.row(started) for c in checks]
    publish_table("guard-checks", rows, description=f"guard: {record.get('outcome', '')}, one row per check")
    chart = plot(checks, limit, started, folder / "guard.png")
    return publish_run("guard", folder, {**record, "checks": rows, "chart": str(chart) if chart else None})
