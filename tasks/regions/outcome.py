"""How one region's rollout ended, from what the cloud recorded, and whether the fleet goes on. Pure functions.

A regional rollout runs as its own flow run, possibly on another machine, so its outcome is read where every
runner can see it: the ``r1-last-rollout`` tag the rollout writes on its endpoint, matched by run id. A run
that wrote nothing and completed changed nothing (no-op); one that failed without a record was refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tasks.rollout.tags import LastRollout

GOOD = ("promoted", "no-op")


@dataclass
class RegionRun:
    region: str
    wave: int
    endpoint: str
    outcome: str = "not run"  # promoted | no-op | rolled back | refused | failed | not run
    reason: str = "an earlier wave stopped the rollout"
    before: str | None = None  # serving image before (digest-pinned)
    after: str | None = None
    started: float | None = None  # epoch seconds
    ended: float | None = None
    flow_run: str | None = None
    url: str | None = None
    verdicts: str = ""

    @property
    def duration_s(self) -> float | None:
        return round(self.ended - self.started, 1) if self.started and self.ended else None

    def row(self) -> dict[str, Any]:
        return {"wave": self.wave + 1, "region": self.region, "endpoint": self.endpoint, "outcome": self.outcome,
                "image": f"{short(self.before)} → {short(self.after)}",
                "duration_s": self.duration_s if self.duration_s is not None else "", "slo": self.verdicts,
                "reason": self.reason, "run": self.url or ""}

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": self.duration_s}


def short(image: str | None) -> str:
    """``…/r1-vllm@sha256:abcdef123456…`` → ``sha256:abcdef123456``: enough to tell images apart in a table."""
    if not image:
        return "none"
    return image.rsplit("@", 1)[1][:19] if "@" in image else image[-24:]


def outcome_of(completed: bool, message: str, last: LastRollout | None, run: str) -> tuple[str, str]:
    """(outcome, reason) of the regional run ``run`` (8-character id) from its final state and the endpoint's record."""
    if last is not None and last.run == run:
        return last.outcome, last.reason
    if completed:
        return "no-op", "already serves this spec"
    if "Refused" in message or "RolloutLocked" in message:
        return "refused", message
    return "failed", message or "the run failed before it recorded an outcome"


def halted(runs: list[RegionRun]) -> str | None:
    """Why the fleet stops after this wave (a region that did not end promoted or unchanged), or None."""
    bad = [r for r in runs if r.outcome not in GOOD]
    return "; ".join(f"{r.region} {r.outcome}: {r.reason}" for r in bad) or None


def slo_summary(record: dict[str, Any]) -> str:
    """"14/14 SLO checks passed" from a regional rollout's rollout.json (its gates' and bakes' verdicts)."""
    checks = []
    for event in record.get("events", []):
        verdict = event.get("verdict") or {}
        for v in ([verdict] if "status" in verdict else verdict.values()):
            checks += [c["ok"] for c in v.get("checks") or []] or [False]
    return f"{sum(checks)}/{len(checks)} SLO checks passed" if checks else ""
