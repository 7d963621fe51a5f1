"""The rollout as a reconciler: from the live state of an endpoint and the desired spec, what to do.

Pure functions only. The flow reads the live state (endpoint traffic, deployments and their spec-hash
tags), asks ``plan_rollout`` what the difference is, and acts on that; re-running after a crash at any
step therefore converges instead of duplicating deployments or losing the serving colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

COLOURS = ("blue", "green")
SPEC_HASH_TAG = "r1-spec-hash"

Action = Literal["noop", "finish", "rollout"]


@dataclass(frozen=True)
class LiveDeployment:
    name: str
    spec_hash: str | None
    provisioning_state: str
    traffic: int = 0
    mirror: int = 0


@dataclass(frozen=True)
class LiveState:
    endpoint_exists: bool
    deployments: dict[str, LiveDeployment] = field(default_factory=dict)

    @property
    def traffic(self) -> dict[str, int]:
        return {n: d.traffic for n, d in self.deployments.items() if d.traffic}

    @property
    def mirror(self) -> dict[str, int]:
        return {n: d.mirror for n, d in self.deployments.items() if d.mirror}


@dataclass(frozen=True)
class RolloutPlan:
    action: Action
    new: str  # the colour that serves the desired spec when done
    old: str | None  # the colour serving before, if any
    reason: str
    resume: bool = False  # the new colour already carries the desired spec (a re-run after a crash)
    live_share: int = 0  # the new colour's live traffic now: a resumed shift continues from here
    restore_old: bool = False  # the colour to replace still serves traffic: the old one goes back to 100 % first
    strays: tuple[str, ...] = ()  # deployments that are neither colour: reported, never touched


def other_colour(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def plan_rollout(live: LiveState, desired_hash: str) -> RolloutPlan:
    """Decide which colour to stage and whether anything is left to do."""
    colours = {n: d for n, d in live.deployments.items() if n in COLOURS}
    strays = tuple(sorted(n for n in live.deployments if n not in COLOURS))
    if not colours:
        return RolloutPlan("rollout", "blue", None, "no deployment yet: first rollout", strays=strays)

    desired = [d for d in colours.values() if d.spec_hash == desired_hash]
    if desired:
        new = desired[0]
        old = colours.get(other_colour(new.name))
        if new.traffic == 100 and not live.mirror:
            if old is None:
                return RolloutPlan("noop", new.name, None, f"{new.name} already serves this spec at 100 %", strays=strays)
            return RolloutPlan(
                "finish", new.name, old.name,
                f"{new.name} already serves this spec at 100 %; {old.name} is left over", strays=strays,
            )
        return RolloutPlan(
            "rollout", new.name, old.name if old else None,
            f"{new.name} already carries this spec at {new.traffic} %: resuming", resume=True,
            live_share=new.traffic, strays=strays,
        )

    serving = max(colours.values(), key=lambda d: (d.traffic, d.name == "blue"))
    new_name = other_colour(serving.name)
    reason = f"{serving.name} serves {serving.traffic} %; staging {new_name}"
    stale = colours.get(new_name)
    restore = bool(stale and (stale.traffic or stale.mirror))
    if restore:
        reason += (f" (replacing {new_name}, which still serves {stale.traffic} % live and {stale.mirror} % mirror "
                   f"with another spec: {serving.name} goes back to 100 % first)")
    elif stale:
        reason += f" (replacing the idle {new_name})"
    return RolloutPlan("rollout", new_name, serving.name, reason, restore_old=restore, strays=strays)


def settled(plan: RolloutPlan, keep_old_warm: bool) -> str | None:
    """Why there is nothing to do (a no-op), or None: the spec serves 100 % and no old colour is left to
    retire — with ``R1_KEEP_OLD_WARM`` the old colour is meant to stay, so it is not "left over"."""
    if plan.action == "noop":
        return plan.reason
    if plan.action == "finish" and keep_old_warm:
        return f"{plan.reason} (kept warm: R1_KEEP_OLD_WARM)"
    return None


def remaining_steps(steps: list[int], plan: RolloutPlan) -> list[int]:
    """The traffic steps still to take: all of them with an old colour, from the first at or above the new
    colour's live share on a resume (never back down), straight to 100 with nothing else serving."""
    if plan.old is None:
        return [100]
    return [s for s in steps if s >= plan.live_share]


def split(new: str, old: str | None, percent: int) -> dict[str, int]:
    """The live traffic for one step: ``percent`` to the new colour, the rest to the old one."""
    if old is None:
        return {new: 100}
    return {new: percent, old: 100 - percent} if percent < 100 else {new: 100, old: 0}


def rollback_split(new: str, old: str | None) -> dict[str, int]:
    """All live traffic back on the old colour; with no old colour, nothing serves."""
    return {old: 100, new: 0} if old else {new: 0}
