"""Where reports go: files under the reports folder and, inside a flow run, Prefect artifacts.

Every report is written through here so the secret scan in the tests has one place to look.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def run_logger(outside: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a run (the lines reach the UI); the ``outside`` logger elsewhere."""
    return get_run_logger() if _in_run() else logging.getLogger(outside)


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
