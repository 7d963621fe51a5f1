"""From a run's records to the summary: distributions, throughputs, concurrency, goodput and warnings.

Pure. Names say what they measure; ``FORMULAS`` is published with every summary. Latency metrics are
taken over successful measured requests; counts, error rate and goodput over all measured ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tasks.loadtest.record import RequestRecord
from tasks.settings import Slo
from tasks.loadtest.slo import evaluate, is_good

PERCENTILES = (50, 90, 95, 99)
SHORT_RATE_THRESHOLD = 0.05  # achieved offered rate below the schedule's by more than this: warn
LATE_SEND_P95_MS = 10.0  # send lag p95 above this: warn that the client or the cap held requests back
COALESCED_SHARE = 0.5  # more chunk gaps than this at 0 (same network read): per-chunk gaps are meaningless

FORMULAS = {
    "ttft_ms": "first choice event (a token of any kind: reasoning, answer, or no text) - actual send",
    "ttfa_ms": "first answer chunk (after reasoning) - actual send",
    "tpot_ms": "(last choice event - first choice event) / (usage.completion_tokens - 1), per request",
    "e2e_ms": "end of response (stream closed after [DONE]) - actual send",
    "ttft_from_intended_ms": "first choice event - intended send (coordinated-omission-correct)",
    "e2e_from_intended_ms": "end of response - intended send (coordinated-omission-correct)",
    "send_lag_ms": "actual send - intended send (open loop: schedule; closed loop: worker ready)",
    "chunk_gap_ms": "gap between consecutive text chunks, pooled over requests (timestamp per network read)",
    "requests_per_s": "successful measured requests / measurement window",
    "output_tokens_per_s": "sum of usage.completion_tokens of successful requests / measurement window",
    "measurement_window_s": "last measured response end - first measured actual send",
    "achieved_rate": "(measured requests - 1) / (last actual send - first actual send)",
    "scheduled_rate": "(measured requests - 1) / (last intended send - first intended send)",
    "achieved_concurrency": "sweep line over [send, end] of measured requests: time-weighted mean and max",
    "goodput": "requests succeeding within TTFT and TPOT limits / all measured requests (errors count)",
}


def stats(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99 (numpy linear interpolation), mean, max and count."""
    if not values:
        return {**{f"p{p}": None for p in PERCENTILES}, "mean": None, "max": None, "n": 0}
    arr = np.asarray(values, dtype=float)
    cuts = np.percentile(arr, PERCENTILES)
    out: dict[str, float | None] = {f"p{p}": round(float(v), 4) for p, v in zip(PERCENTILES, cuts)}
    return {**out, "mean": round(float(arr.mean()), 4), "max": round(float(arr.max()), 4), "n": len(values)}


def ms(values: list[float | None]) -> list[float]:
    return [v * 1000 for v in values if v is not None]


def sweep_concurrency(intervals: list[tuple[float, float]]) -> dict[str, float]:
    """Requests in flight over time, from exact start/end events (no time buckets)."""
    if not intervals:
        return {"mean": 0.0, "max": 0}
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    level = peak = 0
    area = 0.0
    prev = events[0][0]
    for t, step in events:
        area += level * (t - prev)
        level += step
        peak = max(peak, level)
        prev = t
    span = events[-1][0] - events[0][0]
    return {"mean": round(area / span, 4) if span > 0 else float(peak), "max": peak}


def rate(times: list[float]) -> float | None:
    if len(times) < 2 or max(times) <= min(times):
        return None
    return (len(times) - 1) / (max(times) - min(times))


def summarise(records: list[RequestRecord], slo: Slo | None = None, open_loop: bool = False,
              target_rate: float | None = None) -> dict[str, Any]:
    """The run summary (JSON-ready). ``open_loop`` enables the achieved-vs-scheduled rate check."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    window = (min(r.sent_s for r in measured), max(r.end_s for r in measured)) if measured else (0.0, 0.0)
    duration = window[1] - window[0]
    out_tokens = sum(r.completion_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    achieved, scheduled = rate([r.sent_s for r in measured]), rate([r.intended_s for r in measured])
    good = sum(is_good(r, slo) for r in measured) if slo else None
    per_s = (lambda x: round(x / duration, 4)) if duration > 0 else (lambda x: None)
    summary: dict[str, Any] = {
        "requests_total": len(measured),
        "requests_completed": len(ok),
        "requests_failed": len(measured) - len(ok),
        "warmup_requests": len(records) - len(measured),
        "error_rate": round((len(measured) - len(ok)) / len(measured), 6) if measured else None,
        "errors_by_class": dict(Counter(r.error for r in measured if r.error)),
        "ttft_ms": stats(ms([r.ttft_s for r in ok])),
        "ttfa_ms": stats(ms([r.ttfa_s for r in ok])),
        "tpot_ms": stats(ms([r.tpot_s for r in ok])),
        "e2e_ms": stats(ms([r.e2e_s for r in ok])),
        "ttft_from_intended_ms": stats(ms([r.ttft_from_intended_s for r in ok])),
        "e2e_from_intended_ms": stats(ms([r.e2e_from_intended_s for r in ok])),
        "send_lag_ms": stats(ms([r.send_lag_s for r in measured])),
        "chunk_gap_ms": stats(ms([g for r in ok for g in r.chunk_gaps_s])),
        "prompt_tokens": stats([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
        "output_tokens": stats([r.completion_tokens for r in ok if r.completion_tokens is not None]),
        "reasoning_tokens": stats([r.reasoning_tokens for r in ok if r.reasoning_tokens is not None]),
        "answer_tokens": stats([r.answer_tokens for r in ok if r.answer_tokens is not None]),
        "measurement_window_s": round(duration, 6),
        "requests_per_s": per_s(len(ok)),
        "output_tokens_per_s": per_s(out_tokens),
        "total_tokens_per_s": per_s(out_tokens + in_tokens),
        "target_rate": target_rate,
        "scheduled_rate": None if scheduled is None else round(scheduled, 4),
        "achieved_rate": None if achieved is None else round(achieved, 4),
        "achieved_concurrency": sweep_concurrency([(r.sent_s, r.end_s) for r in measured]),
        "served_by": dict(Counter(r.deployment or "(none)" for r in measured)),
        "goodput": None if good is None or not measured else round(good / len(measured), 6),
        "goodput_requests_per_s": None if good is None else per_s(good),
        "slo": evaluate(records, slo).to_dict() if slo else None,
        "formulas": FORMULAS,
    }
    summary["warnings"] = warnings(measured, summary, open_loop)
    return summary


def warnings(measured: list[RequestRecord], summary: dict[str, Any], open_loop: bool) -> list[str]:
    """What makes some numbers untrustworthy, said plainly."""
    out: list[str] = []
    ok = [r for r in measured if r.ok]
    streamed = [r for r in ok if r.text_chunks]
    if failed := summary["requests_failed"]:
        out.append(f"{failed} of {len(measured)} requests failed: {summary['errors_by_class']}")
    if missing := sum(r.completion_tokens is None for r in ok):
        out.append(f"{missing} successful requests had no usage: their TPOT and token counts are undefined "
                   "(never re-tokenized on the client)")
    if multi := [r for r in streamed if r.multi_token_events]:
        ratio = sum(r.completion_tokens for r in multi) / max(1, sum(r.choice_events for r in multi))
        out.append(f"{len(multi)} of {len(streamed)} streamed requests had multi-token chunks ({ratio:.2f} server "
                   "tokens per event): per-chunk gaps are not per-token gaps; TPOT uses server token counts")
    if under := [r for r in streamed if r.completion_tokens is not None and r.completion_tokens < r.text_chunks]:
        out.append(f"{len(under)} of {len(streamed)} streamed requests: the server's usage counts fewer tokens than "
                   "text chunks arrived; its token counts (and TPOT) are suspect")
    gaps = sum(max(0, r.text_chunks - 1) for r in streamed)
    coalesced = sum(r.coalesced_chunks for r in streamed)
    if gaps and coalesced / gaps > COALESCED_SHARE:
        whole = sum(r.text_chunks > 1 and r.coalesced_chunks == r.text_chunks - 1 for r in streamed)
        out.append(f"{coalesced / gaps:.0%} of chunk gaps are 0 (chunks arrived in the same network read; "
                   f"{whole} of {len(streamed)} answers arrived whole): the server or a proxy flushes in "
                   "batches, so per-chunk gaps are meaningless")
    achieved, scheduled = summary["achieved_rate"], summary["scheduled_rate"]
    if open_loop and achieved and scheduled and achieved < scheduled * (1 - SHORT_RATE_THRESHOLD):
        out.append(f"achieved offered rate {achieved:.2f} req/s fell short of the schedule's {scheduled:.2f} req/s "
                   f"by {1 - achieved / scheduled:.0%}: the offered load was not what was asked")
    lag = summary["send_lag_ms"]["p95"]
    if lag is not None and lag > LATE_SEND_P95_MS:
        out.append(f"requests left late: send lag p95 {lag:.1f} ms (client busy or concurrency cap); "
                   "latencies 'from intended' include it")
    return out
