"""Our load generator against vLLM's own ``vllm bench serve``, on the same real vLLM server.

    .venv/bin/python bench/loadtest_vs_vllm.py [--num-prompts 200] [--rate 20] [--rounds 1]

Starts the real vLLM OpenAI server (the emulator's engine: ``.venv/bin/python -m
emulator.engines.vllm build`` first) on the generated tiny model, then for each scenario (closed loop
at concurrency 8; Poisson at ``--rate``) runs vLLM's benchmark and ours, alternately (who goes first
swaps every round), with the same prompt and output lengths (completions, ``--input-len`` tokens in,
exactly ``--output-len`` tokens out with ignore_eos) and prints both side by side. Our synthetic
prompts are calibrated against the server's own token count first. vLLM bench's console output goes
to a log file. "client cpu s" is CPU time of the benchmarking client: for vLLM bench its whole
process (start-up included), for ours the run alone. The aim: TTFT and TPOT medians within 5 % of
vLLM's, and an achieved offered rate at least vLLM bench's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from emulator.engines.vllm import benchmark, ready_layout  # noqa: E402
from emulator.engines.vllm.benchmark import run_serve_benchmark  # noqa: E402
from tasks.loadtest.run import LoadSpec, Destination, run_load, summarise  # noqa: E402
from tasks.loadtest.spec import synthetic_prompt  # noqa: E402
from tests.loadtest_support import VLLM_ARGS, VLLM_MODEL, vllm_server  # noqa: E402

MODEL = VLLM_MODEL
COMPLETIONS_ARGS = VLLM_ARGS.replace(" --reasoning-parser deepseek_r1", "")  # completions only


def calibrate_words(base: str, tokens: int) -> int:
    """How many synthetic words make ``tokens`` prompt tokens on this server (its own tokenizer)."""
    words = tokens
    for _ in range(4):
        counts = [httpx.post(f"{base}/tokenize", json={"model": MODEL, "prompt": synthetic_prompt(words, 0, i)})
                  .json()["count"] for i in range(8)]
        mean = float(np.mean(counts))
        if abs(mean - tokens) < 0.5:
            break
        words = max(1, round(words * tokens / mean))
    return words


@contextlib.contextmanager
def stdout_to(path: Path) -> Iterator[None]:
    """Send this process's (and its children's) fd 1 to ``path`` for a while."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def vllm_bench(base: str, args: argparse.Namespace, load: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="r1-vllm-bench-")) / "result.json"
    cpu = children_cpu_s()
    with stdout_to(out.with_name("console.log")):
        run_serve_benchmark(base, MODEL, out, [
        "--backend", "openai", "--endpoint", "/v1/completions", "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--num-prompts", str(args.num_prompts), "--ignore-eos", "--seed", "0", "--num-warmups", "8",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--save-detailed", *load,
        ])
    cpu = children_cpu_s() - cpu
    r = json.loads(out.read_text())
    starts = sorted(r.get("start_times") or [])
    return {
        "req/s": r["request_throughput"], "out tok/s": r["output_throughput"],
        "in tokens/req": r["total_input_tokens"] / max(1, r["completed"]),
        "TTFT p50": r["p50_ttft_ms"], "TTFT p99": r["p99_ttft_ms"],
        "TPOT p50": r["p50_tpot_ms"], "TPOT p99": r["p99_tpot_ms"],
        "E2E p50": r["p50_e2el_ms"], "E2E p99": r["p99_e2el_ms"], "chunk gap p50": r["p50_itl_ms"],
        "achieved send rate": (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else None,
        "scheduled rate": None, "failed": r.get("failed", 0), "client cpu s": cpu,
    }


def ours(base: str, args: argparse.Namespace, words: int, **load) -> dict:
    spec = LoadSpec(api="completions", requests=args.num_prompts, warmup=8, prompt_tokens=words,
                    max_tokens=args.output_len, ignore_eos=True, model=MODEL, **load)
    cpu = self_cpu_s()
    run = asyncio.run(run_load(Destination(base), spec))
    cpu = self_cpu_s() - cpu
    s = summarise(run.records, open_loop=spec.open_loop, target_rate=spec.rate)
    return {
        "req/s": s["requests_per_s"], "out tok/s": s["output_tokens_per_s"],
        "in tokens/req": s["prompt_tokens"]["mean"],
        "TTFT p50": s["ttft_ms"]["p50"], "TTFT p99": s["ttft_ms"]["p99"],
        "TPOT p50": s["tpot_ms"]["p50"], "TPOT p99": s["tpot_ms"]["p99"],
        "E2E p50": s["e2e_ms"]["p50"], "E2E p99": s["e2e_ms"]["p99"], "chunk gap p50": s["chunk_gap_ms"]["p50"],
        "achieved send rate": s["achieved_rate"], "scheduled rate": s["scheduled_rate"],
        "failed": s["requests_failed"], "client cpu s": cpu,
    }


def show(title: str, theirs: dict, mine: dict) -> None:
    print(f"\n{title}\n{'metric':<20} {'vllm bench':>12} {'ours':>12} {'ours/vllm':>10}")
    for key in theirs:
        a, b = theirs[key], mine[key]
        ratio = f"{b / a:>10.3f}" if a and b is not None else ""
        print(f"{key:<20} {_num(a):>12} {_num(b):>12} {ratio}")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="Poisson scenario: requests per second")
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="repeat both scenarios this many times")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    layout = ready_layout()  # checked once: a rebuild of the engine mid-run must not abort the comparison
    benchmark.ready_layout = lambda: layout
    with vllm_server(COMPLETIONS_ARGS) as base:
        words = calibrate_words(base, args.input_len)
        print(f"synthetic prompts: {words} words = ~{args.input_len} tokens on this server")
        scenarios = [("closed loop, concurrency 8", ["--max-concurrency", "8"], {"concurrency": 8}),
                     (f"open loop, Poisson {args.rate:g} req/s", ["--request-rate", str(args.rate)],
                      {"rate": args.rate, "arrival": "poisson"})]
        for round_ in range(1, args.rounds + 1):
            for title, their_load, our_load in scenarios:
                if round_ % 2:
                    theirs, mine = vllm_bench(base, args, their_load), ours(base, args, words, **our_load)
                else:
                    mine, theirs = ours(base, args, words, **our_load), vllm_bench(base, args, their_load)
                show(f"[round {round_}, {'vllm' if round_ % 2 else 'ours'} first] {title}", theirs, mine)


if __name__ == "__main__":
    main()
