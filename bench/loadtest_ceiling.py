"""Our load generator's own ceiling: the open-loop rate it can offer on time, against the fake engine.

    .venv/bin/python bench/loadtest_ceiling.py [--seconds 4] [--rates 25,50,100,200,400,800]

The fake engine answers at once (no TTFT, every token in one go), so what limits the run is our
client. For each constant rate it prints send lag (actual - intended send) p50/p99/max, the achieved
offered rate, and the client's CPU time per request; the ceiling is the highest rate whose send lag
stays under 1 ms (reported for p50, p90 and p99: on a busy shared box the p99 is the scheduler's).
A closed-loop line (concurrency 8) shows the most requests/s the client drives.
The machine is shared: run it twice and read the figures as this-box numbers. The first line is the
floor any asyncio client sees here: how late a bare ``asyncio.sleep`` wakes up with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tasks.loadtest.run import LoadSpec, Destination, run_load, summarise  # noqa: E402
from tests.fake_engine_process import fake_engine  # noqa: E402

KNOBS = {"FAKE_ENGINE_REASONING_TOKENS": "4", "FAKE_ENGINE_ANSWER_TOKENS": "4", "FAKE_ENGINE_TOKENS_PER_S": "0"}
LAG_LIMIT_MS = 1.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(dest: Destination, spec: LoadSpec) -> dict:
    before = cpu_s()
    run = await run_load(dest, spec)
    s = summarise(run.records, open_loop=spec.open_loop, target_rate=spec.rate)
    return {**s, "cpu_ms_per_req": (cpu_s() - before) * 1000 / max(1, len(run.records))}


async def wakeup_overshoot_ms(samples: int = 300) -> np.ndarray:
    late = []
    for _ in range(samples):
        due = time.perf_counter() + 0.0037
        await asyncio.sleep(0.0037)
        late.append((time.perf_counter() - due) * 1000)
    return np.percentile(late, [50, 99])


async def main(seconds: float, rates: list[float]) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    p50, p99 = await wakeup_overshoot_ms()
    print(f"bare asyncio.sleep wake-up lateness: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    with fake_engine(KNOBS) as engine:
        dest = Destination(engine.url)
        await measure(dest, LoadSpec(concurrency=4, requests=100, model="m"))  # warm the engine and imports
        print(f"{'offered req/s':>13} {'achieved':>9} {'lag p50 ms':>10} {'lag p90 ms':>10} {'lag p99 ms':>10} "
              f"{'lag max ms':>10} "
              f"{'ok':>6} {'cpu ms/req':>10}")
        ceiling = {"p50": None, "p90": None, "p99": None}
        for rate in rates:
            spec = LoadSpec(rate=rate, arrival="constant", requests=max(50, int(rate * seconds)), model="m",
                            max_tokens=8)
            s = await measure(dest, spec)
            lag = s["send_lag_ms"]
            print(f"{rate:>13.0f} {s['achieved_rate']:>9.1f} {lag['p50']:>10.3f} {lag['p90']:>10.3f} "
                  f"{lag['p99']:>10.3f} "
                  f"{lag['max']:>10.3f} {s['requests_completed']:>6} {s['cpu_ms_per_req']:>10.2f}")
            for q in ceiling:
                if lag[q] < LAG_LIMIT_MS and s["requests_failed"] == 0 and s["achieved_rate"] >= 0.99 * rate:
                    ceiling[q] = rate
        for q, rate in ceiling.items():
            print(f"ceiling (send-lag {q} < {LAG_LIMIT_MS} ms): {rate} req/s")
        s = await measure(dest, LoadSpec(concurrency=8, requests=int(200 * seconds), model="m", max_tokens=8))
        print(f"closed loop c8: {s['requests_per_s']:.0f} req/s, e2e p50 {s['e2e_ms']['p50']:.2f} ms, "
              f"client cpu {s['cpu_ms_per_req']:.2f} ms/req, concurrency mean {s['achieved_concurrency']['mean']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load per rate")
    parser.add_argument("--rates", default="25,50,100,150,200,300,400", help="comma-separated offered rates")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, [float(r) for r in args.rates.split(",")]))
