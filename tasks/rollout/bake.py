"""Bakes: live traffic through the endpoint while a traffic split holds, and the judgement of it.

Pure decisions only; ``tasks.rollout.steps`` sleeps, reads the records and calls these.
"""

from __future__ import annotations

from tasks.loadtest.slo import Verdict
from tasks.loadtest.spec import LoadSpec
from tasks.settings import Settings

BAKE_EXTENSION = 3.0  # a thin bake may run up to this many times R1_BAKE_SECONDS to gather enough samples
SETTLE_MARGIN_S = 600.0  # the live load outlives the longest phase by this much; stopped when the phase ends


def bake_spec(s: Settings) -> LoadSpec:
    """Live traffic through the endpoint (no routing header) for the whole mirror and shift phase.

    Bounded by the longest the phase can take (the load precomputes its arrival schedule), and
    stopped as soon as the phase ends."""
    g = s.load_gate
    bakes = (len(s.traffic_steps) + 1) * s.bake_seconds * BAKE_EXTENSION
    longest = bakes + (s.approval_timeout_seconds if s.require_approval else 0) + SETTLE_MARGIN_S
    return LoadSpec(rate=g.bake_rate, max_concurrency=g.concurrency * 4, duration_s=longest,
                    max_tokens=g.max_tokens, model=s.model_id, seed=g.seed, timeout_s=s.request_timeout_ms / 1000)


def expected_samples(s: Settings) -> float:
    """Requests the new colour can expect in its thinnest bake: the smallest step, extension included."""
    return s.load_gate.bake_rate * s.bake_seconds * BAKE_EXTENSION * min(s.traffic_steps) / 100


def unjudgeable_bake(s: Settings) -> str | None:
    """Why no bake could ever be judged with these settings (refuse up front), or None.

    A bake sees ``rate x bake x share`` live requests on the new colour (extended up to
    ``BAKE_EXTENSION`` times while thin); below ``R1_SLO__MIN_REQUESTS`` every verdict is
    "inconclusive" and the rollout would stage, wait for ready and then roll back."""
    if s.bake_seconds <= 0:
        return None  # no bake configured: nothing to judge
    expected = expected_samples(s)
    if expected >= s.slo.min_requests:
        return None
    return (f"R1_BAKE_SECONDS={s.bake_seconds:g} with R1_LOAD_GATE__BAKE_RATE={s.load_gate.bake_rate:g} req/s "
            f"gives the new colour about {expected:.1f} requests in a bake at the smallest traffic step "
            f"({min(s.traffic_steps)} %, bakes extended up to {BAKE_EXTENSION:g}x), fewer than "
            f"R1_SLO__MIN_REQUESTS={s.slo.min_requests}: no bake could be judged. Raise R1_BAKE_SECONDS or "
            f"R1_LOAD_GATE__BAKE_RATE, or lower R1_SLO__MIN_REQUESTS")


def is_thin(verdicts: dict[str, Verdict], new: str) -> bool:
    """Too few samples on the new colour to judge it yet."""
    return new not in verdicts or verdicts[new].status == "inconclusive"


def keep_baking(verdicts: dict[str, Verdict], new: str, baked_s: float, bake_s: float) -> bool:
    """Extend a thin bake, but never past ``BAKE_EXTENSION`` times the configured bake."""
    return is_thin(verdicts, new) and baked_s < bake_s * BAKE_EXTENSION


def detail(verdict: Verdict) -> str:
    return f"{verdict.status} on {verdict.samples} requests: " + "; ".join(verdict.reasons)


def failures(verdicts: dict[str, Verdict], new: str, baked_s: float) -> list[str]:
    """Why a bake fails: any deployment's SLO failed, or the new colour could not be judged."""
    failed = [f"{name}: {detail(v)}" for name, v in verdicts.items() if v.status == "fail"]
    if is_thin(verdicts, new):
        failed.append(f"{new}: not enough live requests to judge in {baked_s:.1f} s "
                      f"(raise R1_BAKE_SECONDS or R1_LOAD_GATE__BAKE_RATE)")
    return failed


def summary(verdicts: dict[str, Verdict]) -> str:
    return "; ".join(f"{name}: {detail(v)}" for name, v in verdicts.items())
