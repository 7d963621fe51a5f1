"""What a rollback does, decided from the live endpoint and what the last promotion recorded on it.

Pure functions only. The colour to put back is the one the ``r1-previous`` record names: warm (it still runs
that spec, Succeeded, at 0 %) it gets 100 % in one traffic update; retired (gone, or running another spec,
such as a failed colour kept for forensics) its recorded image and model are staged again through the rollout.
After a rollback the record names what serves, so a second rollback (a guard that fires twice) is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tasks.rollout.reconcile import COLOURS, LiveState, other_colour
from tasks.rollout.steps import Refused
from tasks.rollout.tags import LastRollout, Previous

Action = Literal["warm", "restage", "noop"]


class RollbackFailed(Exception):
    """The previous spec, staged again, did not pass the rollout's gates; the colour rolled away from still serves."""

    report_dir: str | None = None


@dataclass(frozen=True)
class RollbackPlan:
    action: Action
    serving: str  # the colour at 100 % now: the one rolled away from
    target: str  # the colour that serves when done
    reason: str
    previous: Previous | None
    before: dict[str, int]  # live traffic when decided


def plan_rollback(name: str, live: LiveState, serving_hash: str | None, previous: Previous | None,
                  last: LastRollout | None) -> RollbackPlan:
    """Decide between putting a warm colour back, staging the recorded spec again, or nothing to do."""
    if not live.endpoint_exists:
        raise Refused(f"endpoint {name} does not exist")
    serving = next((n for n, d in live.deployments.items() if n in COLOURS and d.traffic == 100), None)
    if serving is None:
        raise Refused(f"no colour of {name} serves 100 % (live traffic {live.traffic or 'none'}); "
                      "a rollout in progress or interrupted is finished by re-running the rollout")
    if previous and previous.spec_hash == serving_hash:
        return RollbackPlan("noop", serving, serving, f"{serving} already runs the previous spec "
                            f"({previous.spec_hash}, rolled away from at {previous.at})", previous, live.traffic)
    other = other_colour(serving)
    warm = live.deployments.get(other)
    failed_kept = bool(last and last.outcome == "rolled back" and last.new == other)
    if warm and warm.provisioning_state.lower() == "succeeded" and not warm.traffic and not failed_kept and (
            previous is None or warm.spec_hash == previous.spec_hash):
        note = "" if previous else " (no r1-previous record: the warm colour is taken as the previous one)"
        return RollbackPlan("warm", serving, other, f"{other} is warm at 0 %: one traffic update{note}", previous,
                            live.traffic)
    if previous is None:
        why = f"{other} is {'a failed colour kept for forensics' if failed_kept else 'not warm'}" if warm else \
            f"{other} is gone"
        raise Refused(f"nothing to roll back to: {why} and {name} has no r1-previous record")
    found = f"{other} is gone" if warm is None else f"{other} runs spec {warm.spec_hash} ({warm.provisioning_state})"
    model = previous.model or "from the settings"
    return RollbackPlan("restage", serving, other, f"{found}: staging the previous spec {previous.spec_hash} "
                        f"({previous.image}, model {model}) again", previous, live.traffic)


def hash_note(recorded: str, staged: str) -> str:
    """Whether the spec staged again is the one recorded at promotion; settings changed since if not."""
    if recorded == staged:
        return f"staged spec {staged} matches the recorded {recorded}"
    return (f"SETTINGS CHANGED SINCE: staged spec {staged} differs from the recorded {recorded} "
            "(same image and model, today's settings)")
