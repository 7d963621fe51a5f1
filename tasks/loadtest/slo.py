"""The SLO verdict every gate calls: records (or a time window of them) in, pass/fail/inconclusive out.

Pure and deterministic. Rules, in order of the reasons it gives:
- warm-up records are ignored; a window keeps records whose actual send time is in ``[start, end)``;
- fewer than ``slo.min_requests`` records (errors included) is *inconclusive*, never a pass;
- error rate = failed / all > ``max_error_rate`` fails;
- TTFT p95 and TPOT p95 over successful requests (service time, from the actual send) above their
  limits fail; with no successful request they fail too;
- goodput = requests that succeeded with TTFT <= ``ttft_p95_ms`` and TPOT <= ``tpot_p95_ms`` (TPOT
  only where defined) / all requests; errors count against it; below ``min_goodput`` fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from tasks.loadtest.record import RequestRecord
from tasks.settings import Slo

Status = Literal["pass", "fail", "inconclusive"]
Window = tuple[float, float]


@dataclass(frozen=True)
class Check:
    name: str
    measured: float | None
    limit: float
    ok: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    status: Status
    reasons: list[str]
    samples: int
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict:
        return asdict(self)


def in_window(records: Iterable[RequestRecord], window: Window | None = None) -> list[RequestRecord]:
    """Measured (non-warm-up) records whose actual send falls in ``[start, end)``."""
    return [r for r in records if not r.warmup and (window is None or window[0] <= r.sent_s < window[1])]


def is_good(record: RequestRecord, slo: Slo) -> bool:
    """One request meets the SLO: it succeeded and its TTFT and TPOT are within the limits."""
    if not record.ok or record.ttft_s is None or record.ttft_s * 1000 > slo.ttft_p95_ms:
        return False
    return record.tpot_s is None or record.tpot_s * 1000 <= slo.tpot_p95_ms


def evaluate(records: Iterable[RequestRecord], slo: Slo, window: Window | None = None) -> Verdict:
    chosen = in_window(records, window)
    n = len(chosen)
    if n < slo.min_requests:
        return Verdict("inconclusive", [f"only {n} requests, need at least {slo.min_requests} to judge"], n)
    ok = [r for r in chosen if r.ok]
    ttft = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s * 1000 for r in ok if r.tpot_s is not None]
    checks = [
        against_limit("error rate", (n - len(ok)) / n, slo.max_error_rate, "<=", "{:.2%}"),
        against_limit("TTFT p95", _p95(ttft), slo.ttft_p95_ms, "<=", "{:.1f} ms"),
        against_limit("TPOT p95", _p95(tpot), slo.tpot_p95_ms, "<=", "{:.2f} ms") if tpot or not ok else None,
        against_limit("goodput", sum(is_good(r, slo) for r in chosen) / n, slo.min_goodput, ">=", "{:.2%}"),
    ]
    checks = [c for c in checks if c is not None]
    failed = [c.reason for c in checks if not c.ok]
    if failed:
        return Verdict("fail", failed, n, checks)
    return Verdict("pass", [c.reason for c in checks], n, checks)


def evaluate_by_deployment(
    records: Iterable[RequestRecord], slo: Slo, window: Window | None = None
) -> dict[str, Verdict]:
    """One verdict per serving deployment (the ``azureml-model-deployment`` response header).

    Requests that failed before any deployment answered (no header) are judged under ``"(none)"``.
    """
    groups: dict[str, list[RequestRecord]] = {}
    for record in in_window(records, window):
        groups.setdefault(record.deployment or "(none)", []).append(record)
    return {name: evaluate(group, slo) for name, group in sorted(groups.items())}


def _p95(values: list[float]) -> float | None:
    return float(np.percentile(values, 95)) if values else None


def against_limit(name: str, measured: float | None, limit: float, op: str, fmt: str) -> Check:
    """One measured figure against its limit (``op`` "<=" or ">="), with the line a person reads."""
    if measured is None:
        return Check(name, None, limit, False, f"{name}: no successful request to measure")
    ok = measured <= limit if op == "<=" else measured >= limit
    verb = {True: op, False: ">" if op == "<=" else "<"}[ok]
    return Check(name, measured, limit, ok, f"{name} {fmt.format(measured)} {verb} {fmt.format(limit)}")
