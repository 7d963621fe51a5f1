"""Where a rollout's wall time goes on the fake engine with zero bake: waiting vs orchestration.

    .venv/bin/python bench/rollout_overhead.py [--rounds 3]

Starts its own emulator and Prefect home, runs ``rounds`` rollouts in one process (blue, then green,
then blue ..., each with a spec change), and splits each from its timeline:
  waiting        ready polling, smoke and load gate (requests to the engine)
  orchestration  ARM calls (preflight, endpoint, lock, model, plan, stage, traffic shifts, autoscale,
                 retire), plus starting/stopping the live load around the shifts
  prefect        the rest of the wall time: the flow engine's start and end, task-run bookkeeping, and
                 after the last step the report (PNG, markdown and table artifacts) and the unlock call
Round 0 is a warm-up (it includes starting Prefect's ephemeral server) and is printed but not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

WAITING = ("ready", "smoke", "load-gate", "mirror")
SETTINGS = {
    "R1_IMAGE": "local/fake-engine:1", "R1_BAKE_SECONDS": "0", "R1_TRAFFIC_STEPS": "[10,50,100]",
    "R1_LOAD_GATE__REQUESTS": "20", "R1_SLO__MIN_REQUESTS": "5", "R1_PROBES__READINESS__INITIAL_DELAY": "1",
    "R1_PROBES__READINESS__PERIOD": "1", "R1_WORKLOAD__MODEL_LOAD_SECONDS": "1", "R1_AUTH_MODE": "key",
    "R1_ENDPOINT_NAME": "bench-overhead",
}


def step_times(events: list[dict]) -> dict[str, float]:
    """Seconds per step: each event's duration is the time since the one before it."""
    out: dict[str, float] = {}
    previous = 0.0
    for e in events:
        out[e["step"]] = out.get(e["step"], 0.0) + e["t_s"] - previous
        previous = e["t_s"]
    return out


def split(events: list[dict], wall_s: float) -> dict[str, float]:
    steps = step_times(events)
    waiting = sum(v for k, v in steps.items() if k in WAITING)
    inside = events[-1]["t_s"] if events else 0.0
    return {"wall": wall_s, "waiting": waiting, "orchestration": inside - waiting, "prefect": wall_s - inside}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="r1-bench-rollout-"))
    os.environ.update(SETTINGS, R1_EMULATOR_STATE_DIR=str(work / "emulator"), R1_REPORTS_DIR=str(work / "reports"),
                      PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PREFECT_LOGGING_LEVEL="WARNING")
    from emulator import process
    from flows.rollout import rollout

    process.start_detached(work / "emulator", ["--gpu-quota-cores", "100000"])
    rows, per_step = [], []
    try:
        for i in range(args.rounds + 1):  # round 0 warms up (first Prefect server start, imports, caches)
            os.environ["R1_ENVIRONMENT_VARIABLES"] = json.dumps({"FAKE_ENGINE_SEED": str(i)})
            started = time.perf_counter()
            result = rollout(return_state=True).result()
            wall = time.perf_counter() - started
            events = json.loads((Path(result["report_dir"]) / "rollout.json").read_text())["events"]
            row = split(events, wall)
            per_step.append(step_times(events))
            figures = ", ".join(f"{k} {v:.2f} s" for k, v in row.items())
            print(f"round {i}: {result['outcome']} {result['new']}: {figures}")
            if not i:
                per_step.clear()
            else:
                rows.append(row)
    finally:
        process.stop(work / "emulator")
    print(f"\nmedian of {len(rows)} rollouts (zero bake, steps 10/50/100 %, fake engine):")
    for key in ("wall", "waiting", "orchestration", "prefect"):
        value = statistics.median(r[key] for r in rows)
        print(f"  {key:<14} {value:6.2f} s  {100 * value / statistics.median(r['wall'] for r in rows):5.1f} %")
    print("per step (median s):")
    for step in per_step[-1]:
        print(f"  {step:<14} {statistics.median(p.get(step, 0.0) for p in per_step):6.2f}")


if __name__ == "__main__":
    main()
