"""Where a running rollout is, for the Prefect UI: one progress artifact per run, moved on as steps finish and
while the long waits (readiness, each bake) last, so a person watching a 20-minute rollout sees it move.

The bar's scale is the promotion's phases (stage, ready, smoke, load gate, mirror, each shift), equal shares;
steps before the plan leave it at 0 and the end of the run (any outcome) puts it at 100.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from tasks.reports import publish_progress
from tasks.rollout.reconcile import RolloutPlan, remaining_steps
from tasks.settings import Settings

WAIT_SHARE_MAX = 0.95  # a wait never fills its phase: only the step's result does


# Told how long a step has been waiting: (step, seconds waited, its deadline or bake); ``Timeline.waiting``.
# Steps get the bound method, not the timeline: Prefect copies dataclass task arguments while resolving them.
Waiting = Callable[[str, float, float], None]


def rollout_phases(s: Settings, plan: RolloutPlan) -> list[str]:
    """The steps a promotion goes through, in the runbook's order, named as the timeline names them."""
    mirror = ["mirror"] if s.mirror_percent and plan.old else []
    return ["stage", "ready", "smoke", "load-gate", *mirror,
            *(f"shift {percent} %" for percent in remaining_steps(s.traffic_steps, plan))]


@dataclass
class Progress:
    """The run's progress artifact (created on the first move; nothing outside a flow run)."""

    key: str
    phases: list[str] = field(default_factory=list)
    percent: float = 0.0
    artifact_id: UUID | None = None

    def expect(self, phases: list[str]) -> None:
        self.phases = list(phases)
        self._show(0.0, f"planned: {', '.join(phases)}")

    def passed(self, step: str, status: str) -> None:
        """A step's result: its phase is full (an ``info`` line, such as "baking", only says where we are)."""
        done = status != "info" and step in self.phases
        self._show(self._at(step, 1.0) if done else self.percent, f"{step}: {status}")

    def waiting(self, step: str, waited_s: float, budget_s: float) -> None:
        share = min(waited_s / budget_s, WAIT_SHARE_MAX) if budget_s > 0 else 0.0
        self._show(self._at(step, share), f"{step}: waiting, {waited_s:.0f} s of up to {budget_s:.0f} s")

    def finish(self, outcome: str) -> None:
        self._show(100.0, f"rollout {outcome}")

    def _at(self, step: str, share: float) -> float:
        """Percent of the bar at ``share`` of ``step``'s phase; never moves back (a re-run step, a rollback)."""
        if step not in self.phases:
            return self.percent
        return max(self.percent, 100 * (self.phases.index(step) + share) / len(self.phases))

    def _show(self, percent: float, description: str) -> None:
        self.percent = round(percent, 1)
        self.artifact_id = publish_progress(self.key, self.percent, description, self.artifact_id)


def watched_sleep(step: str, budget_s: float, waiting: Waiting, tick_s: float = 1.0) -> Callable[[float], None]:
    """A ``time.sleep`` for a step's waits that tells ``waiting``, about every ``tick_s``, how long the step has
    waited since this was made (against ``budget_s``, the step's deadline or bake)."""
    start = time.monotonic()

    def sleep(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            waiting(step, time.monotonic() - start, budget_s)
            time.sleep(min(tick_s, left))

    return sleep
