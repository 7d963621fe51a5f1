"""The rollback's decision from live state and records: warm, staged again, nothing to do, or refused."""

from __future__ import annotations

import pytest

from tasks.rollback.plan import hash_note, plan_rollback
from tasks.rollout.reconcile import LiveDeployment, LiveState
from tasks.rollout.steps import Refused
from tasks.rollout.tags import LastRollout, Previous

A, B = "a" * 16, "b" * 16
PREV = Previous("blue", "acr.io/r1-vllm@sha256:" + "1" * 64, A, "m:1", "2026-12-06T00:00:00+00:00")


def live(**colours: tuple[str | None, int, str]) -> LiveState:
    return LiveState(True, {n: LiveDeployment(n, h, state, traffic=t) for n, (h, t, state) in colours.items()})


def test_a_warm_previous_colour_gets_100_percent_in_one_update():
    plan = plan_rollback("ep", live(blue=(A, 0, "Succeeded"), green=(B, 100, "Succeeded")), B, PREV, None)
    assert (plan.action, plan.serving, plan.target, plan.before) == ("warm", "green", "blue", {"green": 100})


def test_a_retired_previous_colour_is_staged_again_from_its_record():
    plan = plan_rollback("ep", live(green=(B, 100, "Succeeded")), B, PREV, None)
    assert (plan.action, plan.target, plan.previous) == ("restage", "blue", PREV)
    assert "blue is gone" in plan.reason and PREV.image in plan.reason


@pytest.mark.parametrize("other", [("c" * 16, 0, "Succeeded"), (A, 0, "Failed")], ids=["another spec", "failed"])
def test_an_idle_colour_that_is_not_the_recorded_one_is_replaced_not_trusted(other):
    plan = plan_rollback("ep", live(blue=other, green=(B, 100, "Succeeded")), B, PREV, None)
    assert plan.action == "restage"


def test_a_second_rollback_is_a_no_op_the_previous_spec_already_serves():
    plan = plan_rollback("ep", live(blue=(A, 100, "Succeeded"), green=(B, 0, "Succeeded")), A, PREV, None)
    assert plan.action == "noop" and plan.target == "blue"


def test_without_a_record_a_warm_colour_is_used_but_a_failed_one_kept_for_forensics_is_not():
    state = live(blue=(A, 100, "Succeeded"), green=(B, 0, "Succeeded"))
    assert plan_rollback("ep", state, A, None, None).action == "warm"
    failed = LastRollout("rolled back", "smoke failed", "r", "green", "blue", "now")
    with pytest.raises(Refused, match="failed colour kept for forensics"):
        plan_rollback("ep", state, A, None, failed)


@pytest.mark.parametrize("state, message", [
    (LiveState(False), "does not exist"),
    (live(blue=(A, 75, "Succeeded"), green=(B, 25, "Succeeded")), "no colour of ep serves 100 %"),
    (live(), "no colour of ep serves 100 %"),
    (live(green=(B, 100, "Succeeded")), "green|blue is gone and ep has no r1-previous record"),
])
def test_refused_with_the_reason(state, message):
    with pytest.raises(Refused, match=message):
        plan_rollback("ep", state, B, None, None)


def test_the_note_says_when_settings_changed_since_the_promotion():
    assert hash_note(A, A).startswith("staged spec")
    assert hash_note(A, B).startswith("SETTINGS CHANGED SINCE") and A in hash_note(A, B) and B in hash_note(A, B)
