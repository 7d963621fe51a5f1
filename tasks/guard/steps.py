"""The guard's steps against the endpoint: what to guard now, one check, the breach event, retiring the warm colour.

Each reads live state first: a rollback or a new rollout during the window ends the guard instead of judging
or deleting a colour that has since changed role. The flow (``flows/guard.py``) wraps them in Prefect tasks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tasks.azureml.deployment import delete_deployment
from tasks.azureml.endpoint import get_endpoint, read_live_state
from tasks.events import emit
from tasks.guard.judge import Limits, Sample, judge
from tasks.guard.metrics import read_sample
from tasks.guard.plan import Watch, what_to_guard
from tasks.loadtest.slo import Verdict
from tasks.rollout import steps as rollout_steps
from tasks.rollout.lock import Holder
from tasks.rollout.tags import previous

BREACH_EVENT = "r1.guard.breach"


class Breached(Exception):
    """The serving colour breached the limits; the event for the rollback automation was emitted: exit 1."""

    outcome = "breach"  # the command line's word for it (tasks/rollout/outcome.cli_outcome)
    report_dir: str | None = None


@dataclass(frozen=True)
class Check:
    """One interval judged: when, what was measured, the verdict."""

    at: float  # epoch seconds, the interval's end
    sample: Sample
    verdict: Verdict

    def row(self, started: float) -> dict[str, Any]:
        s, v = self.sample, self.verdict
        return {"t_s": round(self.at - started, 1), "deployment": s.deployment, "requests": s.requests,
                "errors": s.errors, "error_rate": round(s.errors / s.requests, 4) if s.requests else None,
                "latency_p95_ms": None if s.latency_p95_ms is None else round(s.latency_p95_ms, 1),
                "verdict": v.status, "reasons": "; ".join(v.reasons)}

    def record(self) -> dict[str, Any]:
        return {"at": self.at, "sample": asdict(self.sample), "verdict": self.verdict.to_dict()}


def watch(ml: Any, name: str) -> Watch | str:
    live = read_live_state(ml, name)
    tags = (get_endpoint(ml, name).tags or {}) if live.endpoint_exists else {}
    return what_to_guard(name, live, previous(tags))


def endpoint_id(ml: Any, name: str) -> str:
    return ml.online_endpoints.get(name).id


def check(monitor: Any, resource: str, guarded: Watch, start: float, end: float, limit: Limits) -> Check:
    """Read the serving colour's metrics for ``[start, end)`` and judge them."""
    sample = read_sample(monitor, resource, guarded.serving, start, end)
    return Check(end, sample, judge(sample, limit))


def breach(name: str, guarded: Watch, found: Check) -> str:
    """Emit the event the rollback automation hangs on; returns the reason it carries."""
    reason = f"guard: {guarded.serving} breached: {'; '.join(found.verdict.reasons)}"
    emit(BREACH_EVENT, name, {"reason": reason, "serving": guarded.serving, "warm": guarded.warm})
    return reason


def retire_warm(ml: Any, name: str, guarded: Watch, mine: Holder) -> str:
    """Delete the warm colour under the rollout lock (``RolloutLocked`` if a rollout holds it), unless the
    endpoint changed since the guard began."""
    rollout_steps.take_lock(ml, name, mine)
    try:
        now = watch(ml, name)
        if now != guarded:
            return f"{guarded.warm} not retired: the endpoint changed during the window ({now})"
        delete_deployment(ml, name, guarded.warm)
        return f"{guarded.warm} deleted: the window ended clean"
    finally:
        rollout_steps.release_lock(ml, name, mine)
