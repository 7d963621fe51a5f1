"""Where reports go: files under the reports folder and, inside a flow run, Prefect artifacts.

Every report is written through here so the secret scan in the tests has one place to look.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.context import FlowRunContext, TaskRunContext


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def run_logger(outside: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a run (the lines reach the UI); the ``outside`` logger elsewhere."""
    return get_run_logger() if _in_run() else logging.getLogger(outside)


def save_png(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as the report's PNG and free it (figures are kept by pyplot until closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    key = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, key.split("-")))[:100]


def publish_markdown(key: str, markdown: str, description: str = "") -> None:
    """A markdown artifact when running inside a flow; a no-op outside one (plain scripts, tests)."""
    if _in_run():
        create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str = "") -> None:
    if _in_run() and rows:
        create_table_artifact(table=rows, key=artifact_key(key), description=description)


def publish_progress(key: str, percent: float, description: str, artifact_id: UUID | None = None) -> UUID | None:
    """Create a progress artifact (no ``artifact_id`` yet) or move it; returns its id, ``None`` outside a run."""
    if not _in_run():
        return None
    if artifact_id is None:
        return create_progress_artifact(percent, key=artifact_key(key), description=description)
    update_progress_artifact(artifact_id, percent, description=description)
    return artifact_id


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of a table whose columns are the first row's keys; pipes and newlines in cells escaped."""
    if not rows:
        return []
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|").replace("\n", " ") for c in columns) + " |")
    return lines


def png_data_uri(path: Path) -> str:
    """A PNG inlined as a data URI: Prefect's UI shows ``![..](data:image/png;base64,..)`` in a markdown
    artifact (its sanitizer allows ``data:image/`` for images), and the artifact needs no file server."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
