"""A rollout's outcome as the command line reports it: exit code and one JSON object.

Exit 0: promoted or nothing to do; 1: rolled back (or failed); 2: refused before any change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from tasks.rollout.report import recorded_outcome
from tasks.rollout.steps import Refused, RolledBack


def recorded_failure(reports_dir: Path, run_id: str) -> Exception | None:
    """The outcome a run's own report recorded, as its exception, for when Prefect's final state lost it
    (a pause that times out is failed by Prefect itself, "never resumed", after the flow rolled back)."""
    found = recorded_outcome(reports_dir, run_id) or {}
    kind = {"rolled back": RolledBack, "refused": Refused}.get(found.get("outcome"))
    if kind is None:
        return None
    err = kind(found["reason"])
    err.report_dir = found["report_dir"]
    return err


def reported(err: Exception, timeline: Any) -> Exception:
    """``err`` carrying the folder of the run's report, for the command line to print."""
    err.report_dir = str(timeline.folder)
    return err


def cli_outcome(result: dict[str, Any] | BaseException) -> tuple[int, dict[str, Any]]:
    """(exit code, outcome) for a flow's result: its dict, or the exception it ended with."""
    if not isinstance(result, BaseException):
        return EXIT_OK, result
    label = getattr(result, "outcome", None) or {Refused: "refused", RolledBack: "rolled back"}.get(type(result),
                                                                                                   "failed")
    reason = f"{type(result).__name__}: {result}" if label == "failed" else str(result)
    code = EXIT_INVALID if label == "refused" else EXIT_FAILED
    return code, {"outcome": label, "reason": reason, "report_dir": getattr(result, "report_dir", None)}
