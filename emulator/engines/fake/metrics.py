"""Prometheus counters under vLLM's own metric names, so autoscale and load tests read the fake
exactly as they read vLLM; plus ``fake_engine_http_requests_total``, which tests use to prove a
request never reached the engine."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# vLLM's bucket boundaries for time_to_first_token_seconds (also fine for the other latencies).
LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def render(self, name: str, labels: str) -> list[str]:
        lines, cumulative = [f"# TYPE {name} histogram"], 0
        for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {cumulative}')
        lines += [f"{name}_sum{{{labels}}} {self.total}", f"{name}_count{{{labels}}} {cumulative}"]
        return lines


@dataclass
class Metrics:
    model_name: str
    max_num_seqs: int
    running: int = 0
    waiting: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    success: Counter[str] = field(default_factory=Counter)  # by finished_reason
    http_requests: Counter[str] = field(default_factory=Counter)  # by path
    injected_errors: int = 0
    ttft: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)
    inter_token: Histogram = field(default_factory=Histogram)

    def render(self) -> str:
        labels = f'engine="0",model_name="{self.model_name}"'
        gauges = {
            "vllm:num_requests_running": self.running,
            "vllm:num_requests_waiting": self.waiting,
            "vllm:kv_cache_usage_perc": self.running / self.max_num_seqs,
        }
        counters = {
            "vllm:prompt_tokens_total": self.prompt_tokens,
            "vllm:generation_tokens_total": self.generation_tokens,
            "fake_engine_injected_errors_total": self.injected_errors,
        }
        lines = []
        for name, value in gauges.items():
            lines += [f"# TYPE {name} gauge", f"{name}{{{labels}}} {value}"]
        for name, value in counters.items():
            lines += [f"# TYPE {name} counter", f"{name}{{{labels}}} {value}"]
        lines.append("# TYPE vllm:request_success_total counter")
        for reason in ("stop", "length"):
            lines.append(
                f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {self.success[reason]}'
            )
        lines.append("# TYPE fake_engine_http_requests_total counter")
        for path, count in sorted(self.http_requests.items()):
            lines.append(f'fake_engine_http_requests_total{{path="{_escape(path)}"}} {count}')
        lines += self.ttft.render("vllm:time_to_first_token_seconds", labels)
        lines += self.e2e.render("vllm:e2e_request_latency_seconds", labels)
        lines += self.inter_token.render("vllm:inter_token_latency_seconds", labels)
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
