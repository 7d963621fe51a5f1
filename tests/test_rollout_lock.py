"""The rollout lease: a live holder blocks, our own, expired or dead-on-this-host holders do not."""

import socket

import pytest

from tasks.rollout.lock import (
    LOCK_TAG, Holder, RolloutLocked, acquire, blocking_holder, confirm, decode, me, releasable,
)


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


def test_acquire_confirm_and_release_decide_from_the_tags_alone():
    mine = me("run-b", now=1000.0)
    other = Holder("run-a", "other-host", 1, expires=2000.0)
    assert acquire({"other": "x"}, mine, now=1000.0) == mine.encode()
    with pytest.raises(RolloutLocked, match="run-a on other-host"):
        acquire(tags(other), mine, now=1000.0)
    confirm({LOCK_TAG: mine.encode()}, mine, now=1000.0)  # our write stuck
    with pytest.raises(RolloutLocked, match="took the endpoint first"):
        confirm(tags(other), mine, now=1000.0)  # another run wrote between our read and our write
    assert releasable({LOCK_TAG: mine.encode()}, mine, now=1000.0)
    assert not releasable(tags(other), mine, now=1000.0) and not releasable({"other": "x"}, mine, now=1000.0)
    assert releasable(tags(Holder("run-a", "other-host", 1, expires=900.0)), mine, now=1000.0)  # stale
