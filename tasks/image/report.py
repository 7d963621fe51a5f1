"""The image build's report: a markdown artifact in the run, and build.json + build.md under the reports folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.reports import publish_markdown, write_json, write_text


def log_section(log_tail: list[str]) -> list[str]:
    """Markdown lines showing a failed build's last log lines (also in the rollout's report)."""
    return ["", "## Image build log (last lines)", "", "```", *log_tail, "```"] if log_tail else []


def markdown(summary: dict[str, Any], log_tail: list[str]) -> str:
    lines = [f"# Image build: {summary['outcome']}", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in summary.items() if k != "outcome"]
    lines += log_section(log_tail)
    return "\n".join(lines) + "\n"


def write_report(folder: Path, summary: dict[str, Any], log_tail: list[str] = ()) -> Path:
    """Write and publish; returns the folder."""
    text = markdown(summary, list(log_tail))
    write_json(folder / "build.json", {**summary, "log_tail": list(log_tail)})
    write_text(folder / "build.md", text)
    publish_markdown("image-build", text, description=f"Image build {summary['outcome']}")
    return folder
