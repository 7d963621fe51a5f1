"""One rollout per endpoint at a time: a lease kept in the endpoint's own tags.

The lock lives where every runner can see it (the endpoint, in Azure), not in one machine's files.
A holder is stale when its lease expired, or when it ran on this host and its process is gone (a
killed rollout), so a re-run after a kill takes over at once while a live rollout elsewhere is refused.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from tasks.rollout import tags

LOCK_TAG = "r1-rollout-lock"
LEASE_S = 6 * 3600.0


@dataclass(frozen=True)
class Holder:
    run: str
    host: str
    pid: int
    expires: float

    def encode(self) -> str:
        return tags.encode(self)


class RolloutLocked(RuntimeError):
    """Another rollout holds the endpoint."""


def me(run: str, now: float | None = None, lease_s: float = LEASE_S) -> Holder:
    return Holder(run, socket.gethostname(), os.getpid(), (now or time.time()) + lease_s)


def decode(value: str | None) -> Holder | None:
    return tags.decode(Holder, value)  # an unreadable lock protects nothing


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: Holder, now: float | None = None, alive=_alive) -> bool:
    if (now or time.time()) > holder.expires:
        return True
    return holder.host == socket.gethostname() and not alive(holder.pid)


def blocking_holder(tags: dict[str, str], mine: Holder, now: float | None = None, alive=_alive) -> Holder | None:
    """The other live rollout holding the endpoint, if any (our own or a stale lock never blocks)."""
    holder = decode(tags.get(LOCK_TAG))
    if holder is None or holder.run == mine.run or is_stale(holder, now, alive):
        return None
    return holder


def acquire(tags: dict[str, str], mine: Holder, now: float | None = None, alive=_alive) -> str:
    """The lease value to write into the endpoint's tags, or ``RolloutLocked`` naming the live holder."""
    holder = blocking_holder(tags, mine, now, alive)
    if holder:
        raise RolloutLocked(f"rollout {holder.run} on {holder.host} (pid {holder.pid}) holds the endpoint")
    return mine.encode()


def confirm(tags: dict[str, str], mine: Holder, now: float | None = None, alive=_alive) -> None:
    """After writing our lease, re-read: another rollout that wrote between our read and write wins."""
    holder = blocking_holder(tags, mine, now, alive)
    if holder:
        raise RolloutLocked(f"rollout {holder.run} took the endpoint first")


def releasable(tags: dict[str, str], mine: Holder, now: float | None = None, alive=_alive) -> bool:
    """A lease is ours to remove when it is ours or stale; another live rollout's lease is left alone."""
    return LOCK_TAG in tags and blocking_holder(tags, mine, now, alive) is None
