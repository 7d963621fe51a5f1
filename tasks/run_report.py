"""A day-two run's identity and report (one JSON file and one markdown artifact), and its command-line outcome.

The folder is ``<reports_dir>/<flow>-<UTC timestamp>-<run id 8>``, like the rollout's, so reports sort by time
and name the Prefect run they came from. Records hold no secrets (names, colours, traffic, digests, times).
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext

from tasks.cli import InputError
from tasks.prefect_home import print_run_url
from tasks.reports import markdown_table, publish_markdown, write_json
from tasks.rollout.outcome import cli_outcome


def current_run_id() -> str:
    """The Prefect flow run's id (8 characters), or a random one outside a run."""
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else uuid.uuid4().hex[:8]


def run_folder(reports_dir: Path, flow: str, run_id: str) -> Path:
    return reports_dir / f"{flow}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{run_id}"


def publish_run(flow: str, folder: Path, record: dict[str, Any]) -> str:
    """``<flow>.json`` in ``folder`` and a markdown artifact with one row per field; returns the folder."""
    write_json(folder / f"{flow}.json", record)
    rows = [{"field": k, "value": v if isinstance(v, str) else json.dumps(v, default=str)} for k, v in record.items()]
    publish_markdown(f"{flow}-report", "\n".join([f"# {flow}: {record.get('outcome', '')}", "", *markdown_table(rows)]),
                     description=f"{flow} {record.get('outcome', '')}")
    return str(folder)


def reported(err: Exception, flow: str, folder: Path, record: dict[str, Any]) -> Exception:
    """``err`` carrying the folder of the run's report (written now), for the command line to print."""
    err.report_dir = publish_run(flow, folder, record)
    return err


def cli_run(start: Callable[[], State]) -> tuple[int, dict[str, Any]]:
    """Run a flow for the command line (``start`` calls it with ``return_state=True``): its output on stderr, its
    run URL printed; (exit code, outcome). Input the flow refused (a UI form's) is raised: exit 2 via run_cli."""
    with contextlib.redirect_stdout(sys.stderr):
        state = start()
    print_run_url(state.state_details.flow_run_id)
    result = state.result(raise_on_failure=False)
    if isinstance(result, InputError):
        raise result
    return cli_outcome(result)
