"""The guard's decisions as plain functions: what to guard, the verdict on one interval's metrics, the limits."""

from __future__ import annotations

from tasks.guard.judge import Limits, Sample, judge, limits
from tasks.guard.plan import Watch, what_to_guard
from tasks.rollout.reconcile import LiveDeployment, LiveState
from tasks.rollout.tags import Previous
from tasks.settings import load_settings

LIMITS = Limits(max_error_rate=0.01, latency_p95_ms=1000, min_requests=20)
WAS_BLUE = Previous("blue", "img@sha256:" + "a" * 64, "hash-blue", "m:1", "2026-12-06T00:00:00+00:00")


def sample(by_status: dict[int, int], p95: float | None = 200.0) -> Sample:
    return Sample("green", 0.0, 60.0, by_status, p95)


def live(**deployments: tuple[int, str]) -> LiveState:
    """colour=(traffic, spec hash), all Succeeded."""
    return LiveState(True, {n: LiveDeployment(n, h, "Succeeded", traffic=t) for n, (t, h) in deployments.items()})


def test_a_healthy_interval_passes():
    verdict = judge(sample({200: 100}), LIMITS)
    assert verdict.status == "pass" and verdict.samples == 100


def test_latency_over_the_limit_is_a_breach():
    verdict = judge(sample({200: 100}, p95=2500.0), LIMITS)
    assert verdict.status == "fail" and verdict.reasons == ["request latency p95 2500 ms > 1000 ms"]


def test_errors_are_5xx_and_4xx_but_not_throttling():
    assert sample({200: 90, 500: 2, 424: 3, 408: 1, 429: 40}).errors == 6
    assert judge(sample({200: 95, 429: 30}), LIMITS).status == "pass"  # the platform shedding load, not the colour
    failed = judge(sample({200: 95, 424: 5}), LIMITS)  # a model's own 500 reaches clients as Azure's 424
    assert failed.status == "fail" and failed.reasons == ["error rate 5.00% > 1.00%"]


def test_too_few_requests_or_no_latency_is_inconclusive_never_a_breach():
    assert judge(sample({500: 19}), LIMITS).status == "inconclusive"
    assert judge(sample({200: 50}, p95=None), LIMITS).status == "inconclusive"


def test_limits_come_from_the_slo_unless_the_guard_sets_its_own():
    s = load_settings(slo={"ttft_p95_ms": 1000, "tpot_p95_ms": 10, "max_error_rate": 0.02, "min_requests": 7},
                      workload={"output_tokens": 100})
    assert limits(s) == Limits(0.02, 1000 + 10 * 100, 7)
    own = load_settings(guard={"request_latency_p95_ms": 500, "min_requests": 3})
    assert (limits(own).latency_p95_ms, limits(own).min_requests) == (500, 3)


def test_guard_the_serving_colour_while_the_previous_one_is_warm():
    assert what_to_guard("ep", live(green=(100, "hash-green"), blue=(0, "hash-blue")), WAS_BLUE) == Watch("green", "blue")


def test_nothing_to_guard_says_why():
    cases = {
        "does not exist": (LiveState(False), WAS_BLUE),
        "no colour of ep serves 100 %": (live(green=(50, "g"), blue=(50, "hash-blue")), WAS_BLUE),
        "no other colour is kept warm": (live(green=(100, "g")), WAS_BLUE),
        "not the colour the last promotion rolled away from": (live(green=(100, "g"), blue=(0, "other")), WAS_BLUE),
        "r1-previous absent": (live(green=(100, "g"), blue=(0, "hash-blue")), None),
    }
    for expected, (state, previous) in cases.items():
        reason = what_to_guard("ep", state, previous)
        assert isinstance(reason, str) and expected in reason, (expected, reason)
    failed = LiveState(True, {"green": LiveDeployment("green", "g", "Succeeded", traffic=100),
                              "blue": LiveDeployment("blue", "hash-blue", "Failed")})
    assert "not warm at 0 %" in what_to_guard("ep", failed, WAS_BLUE)
