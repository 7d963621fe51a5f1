"""The reconciler's decisions for every live state a crash or a re-run can leave behind."""

from tasks.reconcile import LiveDeployment, LiveState, plan_rollout, rollback_split, split

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
