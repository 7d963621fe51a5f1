"""From a breach to the old colour at 100 % through the guard and the automation, on a real local Prefect server.

    .venv/bin/python bench/guard.py [--rounds 2] [--interval-seconds 3]

Starts its own emulator, a Prefect server with its services (automations need them), registers prefect.yaml and
runs a process worker (tests/prefect_server_support.py). Each round on one endpoint: a rollout promotes green
(a new image, blue kept warm) whose fake engine adds 1.5 s to every request after the 400th; the promotion's
event starts the guard; once it runs, a live load at 40 req/s runs until blue serves 100 % again. Phases:
first bad request sent → ``r1.guard.breach`` (the guard's detection: at most one interval plus two metric reads)
→ the rollback run starts (the automation and the worker) → blue at 100 %. Baseline, same server: the guard's
interval (its detection bound), and a rollback run created directly (the Run button) until blue serves 100 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from emulator import process  # noqa: E402
from tasks import clients  # noqa: E402
from tasks.settings import load_settings  # noqa: E402
from tests.guard_support import GUARD, SPIKE, live_load  # noqa: E402
from tests.prefect_server_support import (  # noqa: E402
    PrefectServer, create_run, deployed_project, run_deployment, runs_of, wait_until,
)
from tests.rollout_support import fast_env, knobs, live_deployments  # noqa: E402

LIMIT_MS = float(GUARD["R1_GUARD__REQUEST_LATENCY_P95_MS"])


def image(i: int) -> str:
    return "local/fake-engine@sha256:" + f"{i + 32:02x}" * 32


def wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def breach_events(server: PrefectServer) -> list[float]:
    with server.http() as http:
        found = http.post("/events/filter", json={"filter": {"event": {"name": ["r1.guard.breach"]}}, "limit": 50})
    return sorted(wall(e["occurred"]) for e in found.raise_for_status().json()["events"])


def promote(server: PrefectServer, ml, endpoint: str, i: int, serving: str = "green", **green) -> None:
    env = {"R1_ENVIRONMENT_VARIABLES": knobs(**green)} if green else {}
    done = run_deployment(server, "rollout/rollout", {"image": image(i)}, env)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    assert live_deployments(ml, endpoint)[0] == {serving: 100}


def serving_blue(ml, endpoint: str):
    return lambda: live_deployments(ml, endpoint)[0] == {"blue": 100}


def round_through_guard(server: PrefectServer, ml, s, i: int) -> dict[str, float]:
    """Seconds of each phase from the first bad request to blue at 100 %."""
    rollbacks, guards = len(runs_of(server, "rollback/rollback")), len(runs_of(server, "guard/guard"))
    promote(server, ml, s.endpoint_name, i, **SPIKE)
    promoted = time.time()
    wait_until(lambda: (found := runs_of(server, "guard/guard")[guards:]) and found[0]["state"]["type"] == "RUNNING",
               120, "the guard running")
    guarding = time.time() - promoted
    time.sleep(2 * float(s.guard.interval_seconds))  # the guard is checking before the spike starts
    with live_load(ml, s, rate=40, seconds=300) as load:
        offset = time.time() - load.now()  # the load's clock -> wall clock
        wait_until(serving_blue(ml, s.endpoint_name), 300, "blue back at 100 %")
        restored = time.time()
    bad = min(r.sent_s for r in load.records() if r.e2e_s is not None and r.e2e_s * 1000 > LIMIT_MS) + offset
    event = next(t for t in breach_events(server) if t > bad)
    run = runs_of(server, "rollback/rollback")[rollbacks]
    started = wall(server.wait_finished(run["id"], 120)["start_time"])
    return {"promoted → guard running": guarding, "bad → event": event - bad,
            "event → rollback starts": started - event, "rollback starts → blue 100 %": restored - started,
            "bad → blue 100 %": restored - bad}


def direct_rollback(server: PrefectServer, ml, endpoint: str, i: int) -> float:
    """A promotion without a spike, then a rollback run created directly: seconds until blue serves 100 %."""
    promote(server, ml, endpoint, i)
    created = time.time()
    create_run(server, "rollback/rollback", {"reason": "bench: the Run button"})
    wait_until(serving_blue(ml, endpoint), 300, "blue back at 100 %")
    return time.time() - created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval-seconds", type=float, default=3.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="r1-bench-guard-"))
    process.start_detached(work / "emulator", ["--gpu-quota-cores", "100000"])
    try:
        endpoint = f"bench-guard-{uuid.uuid4().hex[:6]}"
        env = fast_env(work / "emulator", work / "reports", endpoint, R1_KEEP_OLD_WARM="true", R1_GUARD__MINUTES="10",
                       R1_GUARD__INTERVAL_SECONDS=str(args.interval_seconds), **GUARD)
        s = load_settings(target="local", emulator_state_dir=work / "emulator", endpoint_name=endpoint,
                          guard={"interval_seconds": args.interval_seconds})
        ml = clients.ml_client(s)
        with deployed_project(work, env, services=True) as server:
            promote(server, ml, endpoint, 0, "blue")  # nothing kept warm yet: no guard
            rounds = []
            for i in range(1, args.rounds + 1):
                rounds.append(round_through_guard(server, ml, s, i))
                print(f"round {i}: " + ", ".join(f"{k} {v:.1f} s" for k, v in rounds[-1].items()), flush=True)
            direct = [direct_rollback(server, ml, endpoint, 100 + i) for i in range(args.rounds)]
        print(f"\nmedian over {args.rounds} rounds (guard interval {args.interval_seconds:g} s):")
        for key in rounds[0]:
            print(f"  {key:32s} {statistics.median(r[key] for r in rounds):6.1f} s")
        print(f"baseline: the guard's interval    {args.interval_seconds:6.1f} s (its detection bound)")
        print(f"baseline: rollback run directly   {statistics.median(direct):6.1f} s (created → blue 100 %; "
              f"each: {', '.join(f'{d:.1f}' for d in direct)})")
    finally:
        process.stop(work / "emulator")


if __name__ == "__main__":
    main()
