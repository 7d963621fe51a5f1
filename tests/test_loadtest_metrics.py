"""Run-level aggregates: percentiles, throughput, sweep-line concurrency, rate accounting, warnings."""

import numpy as np
import pytest

from tasks.loadtest.metrics import rate, stats, summarise, sweep_concurrency
from tasks.settings import Slo
from tests.loadtest_support import make_record


def test_stats_are_numpy_linear_percentiles():
    values = [1, 2, 3, 4, 10]
    s = stats(values)
    assert s["p50"] == 3 and s["p90"] == pytest.approx(7.6) and s["p99"] == pytest.approx(9.76)
    assert s["mean"] == 4 and s["max"] == 10 and s["n"] == 5
    assert stats([]) == {"p50": None, "p90": None, "p95": None, "p99": None, "mean": None, "max": None, "n": 0}


def test_sweep_line_concurrency_is_exact_not_bucketed():
    # [0,4] [1,2] [1,3] [5,6]: levels 1 (0-1), 3 (1-2), 2 (2-3), 1 (3-4), 0 (4-5), 1 (5-6)
    conc = sweep_concurrency([(0, 4), (1, 2), (1, 3), (5, 6)])
    assert conc["mean"] == pytest.approx((1 + 3 + 2 + 1 + 0 + 1) / 6, abs=1e-4) and conc["max"] == 3
    # back-to-back requests never overlap: an end and a start at the same instant is not 2 in flight
    assert sweep_concurrency([(0, 1), (1, 2)])["max"] == 1


def test_rate_counts_intervals_between_sends():
    assert rate([0.0, 0.5, 1.0, 1.5]) == pytest.approx(2.0)
    assert rate([3.0]) is None


def test_summary_throughput_and_goodput_over_the_measurement_window():
    slo = Slo(ttft_p95_ms=500, tpot_p95_ms=50, min_requests=1)
    records = [make_record(i, ttft_ms=100, tpot_ms=10, tokens=11, sent_s=i * 0.5) for i in range(8)]
    records.append(make_record(8, error="http_429", sent_s=4.0))
    records.append(make_record(9, ttft_ms=900, sent_s=4.5))
    records.insert(0, make_record(-1, warmup=True, sent_s=-5.0, ttft_ms=9000))
    s = summarise(records, slo)
    window = records[-1].end_s - 0.0  # first measured send at 0
    assert s["requests_total"] == 10 and s["requests_completed"] == 9 and s["requests_failed"] == 1
    assert s["warmup_requests"] == 1 and s["errors_by_class"] == {"http_429": 1}
    assert s["measurement_window_s"] == pytest.approx(window)
    assert s["requests_per_s"] == pytest.approx(9 / window, rel=1e-4)
    assert s["output_tokens_per_s"] == pytest.approx(9 * 11 / window, rel=1e-4)
    assert s["goodput"] == pytest.approx(8 / 10)  # the error and the slow one are not good
    assert s["ttft_ms"]["max"] == pytest.approx(900) and s["ttft_ms"]["n"] == 9
    assert s["tpot_ms"]["p50"] == pytest.approx(10)
    assert s["slo"]["status"] == "fail"
    assert s["warnings"][0].startswith("1 of 10 requests failed")


def test_open_loop_rate_shortfall_and_late_sends_are_flagged():
    # scheduled every 0.1 s, but each went out 0.1 s later than the one before: half the rate
    records = [make_record(i, intended_s=i * 0.1, sent_s=i * 0.2) for i in range(11)]
    s = summarise(records, open_loop=True, target_rate=10.0)
    assert s["scheduled_rate"] == pytest.approx(10.0) and s["achieved_rate"] == pytest.approx(5.0)
    assert s["send_lag_ms"]["max"] == pytest.approx(1000.0)
    assert s["send_lag_ms"]["p50"] == pytest.approx(500.0)
    assert s["e2e_from_intended_ms"]["max"] == pytest.approx(s["e2e_ms"]["max"] + 1000.0)
    assert any("fell short of the schedule's 10.00 req/s by 50%" in w for w in s["warnings"])
    assert any("send lag p95" in w for w in s["warnings"])


def test_on_time_open_loop_has_no_rate_warning():
    records = [make_record(i, intended_s=i * 0.1, sent_s=i * 0.1 + 0.0004) for i in range(11)]
    assert summarise(records, open_loop=True, target_rate=10.0)["warnings"] == []


def test_token_accounting_warnings_name_the_cause():
    multi = [make_record(i, tokens=4) for i in range(5)]
    for r in multi:
        r.completion_tokens = 16  # 16 server tokens in 4 events
    flushed = [make_record(10 + i, tokens=11) for i in range(5)]
    for r in flushed:  # the whole answer in one network read
        r.chunk_times_s = [r.chunk_times_s[-1]] * 11
        r.coalesced_chunks = 10
    no_usage = make_record(20)
    no_usage.completion_tokens = None
    s = summarise(multi + flushed + [no_usage])
    text = "\n".join(s["warnings"])
    assert "5 of 11 streamed requests had multi-token chunks (4.00 server tokens per event)" in text
    assert "1 successful requests had no usage" in text
    assert s["tpot_ms"]["n"] == 10  # the one without usage has no TPOT
    coalesced = sum(r.coalesced_chunks for r in flushed)
    gaps = sum(r.text_chunks - 1 for r in multi + flushed + [no_usage])
    assert coalesced / gaps > 0.5 and "5 of 11 answers arrived whole" in text
    assert np.isclose(s["chunk_gap_ms"]["p50"], 0.0)
