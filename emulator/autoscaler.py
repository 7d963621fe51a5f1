"""Acting on stored autoscale settings: sample the engines' vLLM metrics, evaluate the rules the way
Azure Monitor autoscale does, and change the deployment's instance count.

Metric mapping (the emulator has no GPUs; these are proxies, documented in docs/emulator.md):
    GpuUtilizationPercentage, GpuMemoryUtilizationPercentage, CpuUtilizationPercentage
        -> 100 x mean over ready instances of vllm:kv_cache_usage_perc (share of sequence slots in use)
    RequestLatency_P50/P90/P95/P99 -> ms, from vllm:e2e_request_latency_seconds buckets over the window
    RequestsPerMinute -> vllm:request_success_total over the window
    DeploymentCapacity -> the instance count
Semantics: the first profile; scale out if any Increase rule fires, scale in only if every Decrease
rule fires; ChangeCount / ExactCount / PercentChangeCount within [minimum, maximum]; a rule's
cooldown after a scale action; no action while the deployment is provisioning or without data.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from emulator import rules

log = logging.getLogger(__name__)

_LINE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)')
_LE = re.compile(r'le="([^"]+)"')
_UTILIZATION = {"gpuutilizationpercentage", "gpumemoryutilizationpercentage", "cpuutilizationpercentage"}
_LATENCY = re.compile(r"^requestlatency_p(\d\d)$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "greaterthan": lambda v, t: v > t, "greaterthanorequal": lambda v, t: v >= t,
    "lessthan": lambda v, t: v < t, "lessthanorequal": lambda v, t: v <= t,
    "equals": lambda v, t: v == t, "notequals": lambda v, t: v != t,
}


@dataclass(frozen=True)
class Sample:
    at: float
    utilization: float  # percent
    buckets: dict[float, float]  # latency upper bound (s) -> cumulative count, summed over instances
    requests: float
    capacity: int


def parse_metrics(text: str) -> tuple[float | None, dict[float, float], float]:
    """(kv cache usage 0-1, e2e latency buckets, successful requests) from one engine's /metrics."""
    usage, buckets, requests = None, {}, 0.0
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, labels, raw = m.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        if name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
            usage = value
        elif name == "vllm:e2e_request_latency_seconds_bucket":
            le = _LE.search(labels or "")
            if le:
                bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
                buckets[bound] = buckets.get(bound, 0.0) + value
        elif name == "vllm:request_success_total":
            requests += value
    return usage, buckets, requests


def quantile_ms(first: dict[float, float], last: dict[float, float], q: float) -> float | None:
    """The q-quantile (ms, a bucket's upper bound) of latencies seen between two cumulative histograms.
    Past the largest finite bucket it answers that bound: a lower limit, still enough to fire a rule."""
    deltas = sorted((le, max(0.0, last.get(le, 0.0) - first.get(le, 0.0))) for le in last)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    finite = [le for le, _ in deltas if le != math.inf]
    bound = next(le for le, count in deltas if count >= q * total)
    return (bound if bound != math.inf else max(finite, default=0.0)) * 1000


def metric_value(name: str, samples: list[Sample], aggregation: str) -> float | None:
    """The rule's metric over the window's samples, or None when there is no data."""
    if not samples:
        return None
    key = name.lower()
    if key in _UTILIZATION or key == "deploymentcapacity":
        values = [s.utilization if key in _UTILIZATION else float(s.capacity) for s in samples]
        agg = aggregation.lower()
        if agg == "maximum":
            return max(values)
        if agg == "minimum":
            return min(values)
        if agg == "total":
            return sum(values)
        if agg == "last":
            return values[-1]
        if agg == "count":
            return float(len(values))
        return sum(values) / len(values)
    if len(samples) < 2:
        return None
    latency = _LATENCY.match(key)
    if latency:
        return quantile_ms(samples[0].buckets, samples[-1].buckets, int(latency.group(1)) / 100)
    if key == "requestsperminute":
        minutes = max((samples[-1].at - samples[0].at) / 60, 1e-9)
        return max(0.0, samples[-1].requests - samples[0].requests) / minutes
    return None


def fires(rule: dict, samples: list[Sample], now: float) -> bool:
    trigger = rule.get("metricTrigger") or {}
    window = rules.parse_duration(trigger.get("timeWindow") or "PT5M", "timeWindow")
    recent = [s for s in samples if s.at >= now - window]
    value = metric_value(trigger.get("metricName", ""), recent, trigger.get("timeAggregation") or "Average")
    compare = _OPERATORS.get(str(trigger.get("operator", "")).lower())
    return value is not None and compare is not None and compare(value, float(trigger.get("threshold", 0)))


def new_count(action: dict, current: int) -> int:
    value = float(action.get("value") or 1)
    kind = str(action.get("type") or "ChangeCount").lower()
    if kind == "exactcount":
        return int(value)
    step = math.ceil(current * value / 100) if kind == "percentchangecount" else int(value)
    return current + step if str(action.get("direction")).lower() == "increase" else current - step


def decide(profile: dict, samples: list[Sample], current: int, now: float, last_action: float) -> int:
    """The instance count the profile asks for now (``current`` if nothing fires)."""
    cap = profile.get("capacity") or {}
    low, high = int(cap.get("minimum", 1)), int(cap.get("maximum", current))
    bounded = min(max(current, low), high)
    if bounded != current:
        return bounded

    def cooled(rule: dict) -> bool:
        cooldown = rules.parse_duration((rule.get("scaleAction") or {}).get("cooldown") or "PT5M", "cooldown")
        return now - last_action >= cooldown

    rules_ = profile.get("rules") or []
    ups = [r for r in rules_ if str((r.get("scaleAction") or {}).get("direction")).lower() == "increase"]
    downs = [r for r in rules_ if str((r.get("scaleAction") or {}).get("direction")).lower() == "decrease"]
    outs = [new_count(r["scaleAction"], current) for r in ups if cooled(r) and fires(r, samples, now)]
    if outs:
        return min(max(outs), high)
    if downs and all(cooled(r) and fires(r, samples, now) for r in downs):
        return max(max(new_count(r["scaleAction"], current) for r in downs), low)
    return current


@dataclass
class _Track:
    samples: deque = field(default_factory=lambda: deque(maxlen=2000))
    last_action: float = 0.0


class Autoscaler:
    """Every ``interval`` seconds: sample each autoscaled deployment and apply its setting."""

    def __init__(self, control, interval: float):
        self._cp = control
        self.interval = interval
        self._tracks: dict[str, _Track] = {}
        self._http = httpx.AsyncClient(trust_env=False, timeout=2)

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.tick()
                except Exception:  # a bad setting must not stop autoscaling for the others
                    log.exception("autoscale evaluation failed")
        finally:
            await self._http.aclose()

    async def _sample(self, deployment: dict) -> Sample | None:
        urls = self._cp.runtime.ready_urls(deployment["id"])
        if not urls:
            return None
        answers = await asyncio.gather(*(self._http.get(u + "/metrics") for u in urls), return_exceptions=True)
        parsed = [parse_metrics(a.text) for a in answers if isinstance(a, httpx.Response) and a.status_code == 200]
        if not parsed:
            return None
        usages = [u for u, _, _ in parsed if u is not None]
        buckets: dict[float, float] = {}
        for _, b, _ in parsed:
            for le, count in b.items():
                buckets[le] = buckets.get(le, 0.0) + count
        return Sample(time.monotonic(), 100 * sum(usages) / len(usages) if usages else 0.0, buckets,
                      sum(r for _, _, r in parsed), deployment["sku"]["capacity"])

    async def tick(self) -> None:
        active = set()
        for setting in self._cp.store.all("autoscale"):
            props = setting["properties"]
            deployment = self._cp.store.get(props.get("targetResourceUri") or "")
            if not props.get("enabled") or deployment is None or not props.get("profiles"):
                continue
            key = deployment["id"].lower()
            active.add(key)
            track = self._tracks.setdefault(key, _Track())
            if deployment["properties"].get("provisioningState") != "Succeeded":
                continue
            sample = await self._sample(deployment)
            if sample:
                track.samples.append(sample)
            now = time.monotonic()
            current = deployment["sku"]["capacity"]
            wanted = decide(props["profiles"][0], list(track.samples), current, now, track.last_action)
            if wanted != current and self._cp.scale_deployment(deployment["id"], wanted):
                log.info("autoscale %s: %s -> %s instances", setting["name"], current, wanted)
                track.last_action = now
                track.samples.clear()
        for stale in set(self._tracks) - active:
            del self._tracks[stale]
