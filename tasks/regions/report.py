"""The fleet's report: one table across regions, a waves-over-time chart, JSON, and a markdown artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.regions.outcome import RegionRun
from tasks.reports import (markdown_table, png_data_uri, publish_markdown, publish_table, save_png, write_json,
                           write_text)

COLOURS = {"promoted": "tab:green", "no-op": "tab:gray", "rolled back": "tab:orange", "refused": "tab:purple",
           "failed": "tab:red"}


def chart(runs: list[RegionRun], path: Path) -> Path | None:
    """Each region a bar from start to end of its run, coloured by outcome, grouped by wave: the fleet over time."""
    done = [r for r in runs if r.started and r.ended]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(r.started for r in done)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(runs)))
    labels = [f"wave {r.wave + 1}: {r.region}" for r in runs]
    for y, r in enumerate(runs):
        if r.started and r.ended:
            ax.barh(y, r.ended - r.started, left=r.started - t0, color=COLOURS.get(r.outcome, "tab:red"))
            ax.text(r.ended - t0, y, f" {r.outcome}", va="center", fontsize=8)
    ax.set_yticks(range(len(runs)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first region started")
    ax.set_title("Regions by wave")
    return save_png(fig, path)


def publish(folder: Path, outcome: str, reason: str, runs: list[RegionRun]) -> dict[str, Any]:
    """Files under ``folder`` and the artifacts; returns the summary the flow returns."""
    png = chart(runs, folder / "regions.png")
    rows = [r.row() for r in runs]
    lines = [f"# Regions: {outcome}", "", reason, "", *markdown_table(rows)]
    if png:
        lines += ["", f"![waves over time]({png_data_uri(png)})"]
    write_text(folder / "regions.md", "\n".join(lines[:5] + markdown_table(rows)) + "\n")
    summary = {"outcome": outcome, "reason": reason, "regions": [r.record() for r in runs], "report_dir": str(folder)}
    write_json(folder / "regions.json", summary)
    publish_table("regions", rows, description=f"regions {outcome}")
    publish_markdown("regions-report", "\n".join(lines), description=reason[:200])
    return summary
