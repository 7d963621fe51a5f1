"""The SLO verdict: pass / fail / inconclusive with reasons, windows, warm-up and per-deployment views."""

import pytest

from tasks.settings import Slo
from tasks.loadtest.slo import evaluate, evaluate_by_deployment, is_good
from tests.loadtest_support import make_record

SLO = Slo(ttft_p95_ms=500, tpot_p95_ms=50, max_error_rate=0.05, min_goodput=0.9, min_requests=20)


def healthy(n: int = 40, **kw):
    return [make_record(i, ttft_ms=100 + i, tpot_ms=20, **kw) for i in range(n)]


def test_healthy_run_passes_with_every_check_as_a_reason():
    verdict = evaluate(healthy(), SLO)
    assert verdict.status == "pass" and verdict.passed and verdict.samples == 40
    assert [c.name for c in verdict.checks] == ["error rate", "TTFT p95", "TPOT p95", "goodput"]
    ttft = next(c for c in verdict.checks if c.name == "TTFT p95")
    assert ttft.measured == pytest.approx(137.05) and ttft.ok  # linear p95 of 100..139 ms: 100 + 0.95 * 39
    assert ttft.reason in verdict.reasons and ttft.reason.endswith("ms <= 500.0 ms")


def test_too_few_requests_is_inconclusive_never_pass():
    verdict = evaluate(healthy(19), SLO)
    assert verdict.status == "inconclusive" and "only 19 requests" in verdict.reasons[0]


def test_errors_over_the_limit_fail_and_count_against_goodput():
    records = healthy(36) + [make_record(36 + i, error="http_500") for i in range(4)]
    verdict = evaluate(records, SLO)
    assert verdict.status == "fail"
    assert verdict.reasons == ["error rate 10.00% > 5.00%"]  # goodput 90 % still meets 90 %


def test_slow_ttft_tail_fails_the_p95():
    records = healthy(36) + [make_record(36 + i, ttft_ms=900) for i in range(4)]
    verdict = evaluate(records, SLO)
    assert verdict.status == "fail"
    assert any(r.startswith("TTFT p95 900.0 ms > 500.0 ms") for r in verdict.reasons)


def test_slow_decoding_fails_the_tpot_p95():
    verdict = evaluate([make_record(i, tpot_ms=80) for i in range(30)], SLO)
    assert [c.name for c in verdict.checks if not c.ok] == ["TPOT p95", "goodput"]


def test_goodput_fails_alone_when_errors_and_a_slow_tail_stay_under_their_own_limits():
    slo = SLO.model_copy(update={"min_goodput": 0.97, "max_error_rate": 0.05})
    records = healthy(38) + [make_record(38, error="timeout"), make_record(39, ttft_ms=600)]
    verdict = evaluate(records, slo)
    assert verdict.status == "fail" and verdict.reasons == ["goodput 95.00% < 97.00%"]


def test_no_successful_request_fails_with_a_reason():
    verdict = evaluate([make_record(i, error="connect_error", deployment=None) for i in range(25)], SLO)
    assert verdict.status == "fail"
    assert "TTFT p95: no successful request to measure" in verdict.reasons


def test_single_token_answers_skip_the_tpot_check_instead_of_failing():
    verdict = evaluate([make_record(i, tokens=1) for i in range(25)], SLO)
    assert verdict.status == "pass" and "TPOT p95" not in [c.name for c in verdict.checks]


def test_window_keeps_records_sent_inside_it_and_warmup_never_counts():
    records = [make_record(i, warmup=True, ttft_ms=5000) for i in range(5)]
    records += [make_record(i, ttft_ms=100 if i < 40 else 5000, sent_s=float(i)) for i in range(5, 80)]
    assert evaluate(records, SLO, window=(5.0, 40.0)).status == "pass"
    assert evaluate(records, SLO, window=(40.0, 80.0)).status == "fail"
    assert evaluate(records, SLO, window=(5.0, 20.0)).status == "inconclusive"


def test_by_deployment_judges_each_colour_from_the_served_by_header():
    records = healthy(30, deployment="blue")
    records += [make_record(100 + i, ttft_ms=2000, deployment="green") for i in range(25)]
    records += [make_record(200, error="connect_error", deployment=None)]
    verdicts = evaluate_by_deployment(records, SLO)
    assert {k: v.status for k, v in verdicts.items()} == {"(none)": "inconclusive", "blue": "pass", "green": "fail"}


@pytest.mark.parametrize(("ttft", "tpot", "error", "good"), [
    (500, 50, None, True), (501, 10, None, False), (10, 51, None, False), (10, 10, "http_429", False),
])
def test_a_request_is_good_only_if_it_succeeded_within_both_limits(ttft, tpot, error, good):
    assert is_good(make_record(0, ttft_ms=ttft, tpot_ms=tpot, error=error), SLO) is good
