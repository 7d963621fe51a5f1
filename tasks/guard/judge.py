"""The guard's verdict on one interval of Azure Monitor metrics for the serving colour: pure.

Same limits as the rollout's SLO where they apply: the error rate against ``R1_SLO__MAX_ERROR_RATE`` (errors are
5xx and 4xx answers except 429, which is the platform shedding load, not the colour failing: Azure answers a
model's own failure as 424), the whole-request latency p95 (``RequestLatency_P95``) against
``R1_GUARD__REQUEST_LATENCY_P95_MS``. Fewer requests than the minimum, or no latency reported, is
*inconclusive*: never a breach, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.loadtest.slo import Verdict, against_limit
from tasks.settings import Settings

THROTTLED = 429


@dataclass(frozen=True)
class Sample:
    """What Azure Monitor reported for one deployment over one interval."""

    deployment: str
    start: float  # epoch seconds
    end: float
    by_status: dict[int, int]  # RequestsPerMinute total per statusCode
    latency_p95_ms: float | None  # RequestLatency_P95

    @property
    def requests(self) -> int:
        return sum(self.by_status.values())

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.by_status.items() if code >= 500 or (400 <= code < 500 and code != THROTTLED))


@dataclass(frozen=True)
class Limits:
    max_error_rate: float
    latency_p95_ms: float
    min_requests: int


def limits(s: Settings) -> Limits:
    g = s.guard
    latency = g.request_latency_p95_ms or s.slo.ttft_p95_ms + s.slo.tpot_p95_ms * s.workload.output_tokens
    return Limits(s.slo.max_error_rate, latency, g.min_requests or s.slo.min_requests)


def judge(sample: Sample, limit: Limits) -> Verdict:
    n = sample.requests
    if n < limit.min_requests:
        return Verdict("inconclusive", [f"only {n} requests, need at least {limit.min_requests} to judge"], n)
    if sample.latency_p95_ms is None:
        return Verdict("inconclusive", [f"{n} requests but no RequestLatency_P95 reported yet"], n)
    checks = [against_limit("error rate", sample.errors / n, limit.max_error_rate, "<=", "{:.2%}"),
              against_limit("request latency p95", sample.latency_p95_ms, limit.latency_p95_ms, "<=",
                            "{:.0f} ms")]
    failed = [c.reason for c in checks if not c.ok]
    return Verdict("fail" if failed else "pass", failed or [c.reason for c in checks], n, checks)
