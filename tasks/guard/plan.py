"""What the guard watches, decided from the live endpoint and the ``r1-previous`` record: pure.

A guard is meaningful only right after a promotion that kept the old colour warm: one colour serves 100 % and
the colour that promotion rolled away from (``r1-previous``, same spec) is still there at 0 %, ready for a
one-update rollback. Anything else (a rollout in progress, a rollback done, the warm colour retired) leaves
nothing to guard, and the reason says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.rollout.reconcile import COLOURS, LiveState, other_colour
from tasks.rollout.tags import Previous


@dataclass(frozen=True)
class Watch:
    serving: str  # at 100 %: judged
    warm: str  # at 0 %: what a breach rolls back to, retired when the window ends clean


def what_to_guard(name: str, live: LiveState, previous: Previous | None) -> Watch | str:
    """The colours to guard, or why there is nothing to guard."""
    if not live.endpoint_exists:
        return f"endpoint {name} does not exist"
    serving = next((n for n, d in live.deployments.items() if n in COLOURS and d.traffic == 100), None)
    if serving is None:
        return f"no colour of {name} serves 100 % (live traffic {live.traffic or 'none'})"
    warm = live.deployments.get(other_colour(serving))
    if warm is None:
        return f"{serving} serves 100 % and no other colour is kept warm"
    if warm.traffic or warm.mirror or warm.provisioning_state.lower() != "succeeded":
        return f"{warm.name} is not warm at 0 % ({warm.traffic} % traffic, {warm.mirror} % mirror, " \
               f"{warm.provisioning_state})"
    if previous is None or previous.colour != warm.name or previous.spec_hash != warm.spec_hash:
        return f"{warm.name} is not the colour the last promotion rolled away from (r1-previous " \
               f"{previous.colour + ' ' + previous.spec_hash if previous else 'absent'})"
    return Watch(serving, warm.name)
