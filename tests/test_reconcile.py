"""The reconciler's decisions for every live state a crash or a re-run can leave behind."""

from tasks.rollout.reconcile import (
    LiveDeployment, LiveState, plan_rollout, remaining_steps, rollback_split, settled, split,
)

H_NEW, H_OLD = "new", "old"


def state(**deps: tuple[str | None, int, int]) -> LiveState:
    return LiveState(
        True,
        {n: LiveDeployment(n, h, "Succeeded", traffic=t, mirror=m) for n, (h, t, m) in deps.items()},
    )


def test_first_rollout_stages_blue():
    plan = plan_rollout(LiveState(False), H_NEW)
    assert (plan.action, plan.new, plan.old) == ("rollout", "blue", None)


def test_blue_serving_stages_green_and_back():
    plan = plan_rollout(state(blue=(H_OLD, 100, 0)), H_NEW)
    assert (plan.action, plan.new, plan.old, plan.resume) == ("rollout", "green", "blue", False)
    plan = plan_rollout(state(green=(H_OLD, 100, 0)), H_NEW)
    assert (plan.new, plan.old) == ("blue", "green")


def test_same_spec_at_full_traffic_is_a_noop():
    plan = plan_rollout(state(green=(H_NEW, 100, 0)), H_NEW)
    assert plan.action == "noop" and "already serves" in plan.reason


def test_promoted_with_old_colour_left_finishes():
    plan = plan_rollout(state(green=(H_NEW, 100, 0), blue=(H_OLD, 0, 0)), H_NEW)
    assert (plan.action, plan.new, plan.old) == ("finish", "green", "blue")


def test_killed_mid_shift_resumes_with_the_same_colours():
    plan = plan_rollout(state(blue=(H_OLD, 50, 0), green=(H_NEW, 50, 0)), H_NEW)
    assert (plan.action, plan.new, plan.old, plan.resume) == ("rollout", "green", "blue", True)


def test_mirror_left_on_is_not_a_noop():
    plan = plan_rollout(state(green=(H_NEW, 100, 0), blue=(H_OLD, 0, 10)), H_NEW)
    assert plan.action == "rollout" and plan.resume


def test_idle_colour_with_a_stale_spec_is_replaced_not_duplicated():
    plan = plan_rollout(state(blue=(H_OLD, 100, 0), green=("older", 0, 0)), H_NEW)
    assert (plan.new, plan.old) == ("green", "blue") and "replacing" in plan.reason


def test_strays_are_reported_not_touched():
    plan = plan_rollout(state(blue=(H_OLD, 100, 0), current=(None, 0, 0)), H_NEW)
    assert plan.strays == ("current",) and plan.new == "green"


def test_splits():
    assert split("green", "blue", 10) == {"green": 10, "blue": 90}
    assert split("green", "blue", 100) == {"green": 100, "blue": 0}
    assert split("blue", None, 10) == {"blue": 100}
    assert rollback_split("green", "blue") == {"blue": 100, "green": 0}
    assert rollback_split("blue", None) == {"blue": 0}


def test_a_stale_colour_still_serving_puts_the_old_one_back_to_100_first():
    """Killed mid-shift (green 25 %), then re-run with a changed spec: green is replaced, blue restored first."""
    plan = plan_rollout(state(blue=(H_OLD, 75, 0), green=("older", 25, 0)), H_NEW)
    assert (plan.action, plan.new, plan.old, plan.restore_old) == ("rollout", "green", "blue", True)
    assert "still serves 25 %" in plan.reason and "blue goes back to 100 % first" in plan.reason
    idle = plan_rollout(state(blue=(H_OLD, 100, 0), green=("older", 0, 0)), H_NEW)
    assert not idle.restore_old and "replacing the idle green" in idle.reason


def test_a_resumed_shift_continues_from_the_live_split_never_back_down():
    steps = [10, 50, 100]
    at_50 = plan_rollout(state(blue=(H_OLD, 50, 0), green=(H_NEW, 50, 0)), H_NEW)
    assert at_50.live_share == 50 and remaining_steps(steps, at_50) == [50, 100]
    at_25 = plan_rollout(state(blue=(H_OLD, 75, 0), green=(H_NEW, 25, 0)), H_NEW)
    assert remaining_steps(steps, at_25) == [50, 100]
    staged = plan_rollout(state(blue=(H_OLD, 100, 0), green=(H_NEW, 0, 0)), H_NEW)
    assert remaining_steps(steps, staged) == steps
    fresh = plan_rollout(state(blue=(H_OLD, 100, 0)), H_NEW)
    assert remaining_steps(steps, fresh) == steps
    first = plan_rollout(LiveState(False), H_NEW)
    assert remaining_steps(steps, first) == [100]


def test_settled_says_why_nothing_is_left_to_do():
    assert settled(plan_rollout(state(green=(H_NEW, 100, 0)), H_NEW), keep_old_warm=False).startswith("green already")
    finish = plan_rollout(state(green=(H_NEW, 100, 0), blue=(H_OLD, 0, 0)), H_NEW)
    assert settled(finish, keep_old_warm=False) is None  # blue is left over: retire it
    assert settled(finish, keep_old_warm=True).endswith("(kept warm: R1_KEEP_OLD_WARM)")
    assert settled(plan_rollout(state(blue=(H_OLD, 100, 0)), H_NEW), keep_old_warm=True) is None
