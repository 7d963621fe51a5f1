"""The rollout lease: a live holder blocks, our own, expired or dead-on-this-host holders do not."""

import socket

from tasks.rollout_lock import LOCK_TAG, Holder, blocking_holder, decode, me


def tags(holder: Holder) -> dict[str, str]:
    return {LOCK_TAG: holder.encode(), "other": "x"}


def test_live_holder_elsewhere_blocks():
    other = Holder("run-a", "other-host", 1, expires=2000.0)
    assert blocking_holder(tags(other), me("run-b", now=1000.0), now=1000.0) == other


def test_same_run_expired_or_dead_process_do_not_block():
    mine = me("run-b", now=1000.0)
    assert blocking_holder(tags(Holder("run-b", "h", 1, 2000.0)), mine, now=1000.0) is None
    assert blocking_holder(tags(Holder("run-a", "other-host", 1, 900.0)), mine, now=1000.0) is None
    here = Holder("run-a", socket.gethostname(), 424242, 2000.0)
    assert blocking_holder(tags(here), mine, now=1000.0, alive=lambda pid: False) is None
    assert blocking_holder(tags(here), mine, now=1000.0, alive=lambda pid: True) == here


def test_no_or_garbled_lock_does_not_block():
    mine = me("run-b")
    assert blocking_holder({}, mine) is None
    assert decode("not json") is None and blocking_holder({LOCK_TAG: "{"}, mine) is None
