"""Does a blue/green rollout cost the endpoint's clients anything? Steady load alone vs across a rollout.

    .venv/bin/python bench/zero_downtime.py [--rate 18] [--steady 20] [--bake 8]

Starts its own emulator and Prefect home, rolls out blue on the fake engine (fast settings), then keeps
one open-loop streaming load running through the endpoint (no routing header, as a client would) while
  steady   blue serves alone for ``--steady`` seconds
  during   a second rollout (green: changed spec, 20 % mirror, shifts 10/50/100 %, ``--bake`` s each,
           then blue is retired) runs from start to end in this process
  after    green alone for a few seconds after the rollout returned
Records are split by when they were sent. Prints sent, failed and p50/p99 latency (end-to-end and TTFT)
per phase from the one run, and p99 during / steady (the aim: no failures, ratio <= 1.25). The
rollout's own bake load (R1_LOAD_GATE__BAKE_RATE) and its smoke and load gate add to the endpoint's
load during the rollout, as they would in production; the flow's orchestration shares the cores too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.rollout_support import fast_env, knobs  # noqa: E402

ENDPOINT = "bench-zero-downtime"
WARMUP_S = 3.0  # load runs this long before the steady window (connections, first requests)
AFTER_S = 5.0  # green alone, after the rollout returned
ENGINE = dict(ttft_ms=40, tokens_per_s=400)  # both colours: ~40 ms to first token, 20 tokens at 400/s


def run_rollout(env: dict[str, str]) -> tuple[str, dict, float]:
    """Run the flow in-process with ``env`` set: (outcome line, rollout.json, wall seconds)."""
    from flows.rollout import rollout

    os.environ.update(env)
    started = time.perf_counter()
    result = rollout(return_state=True).result(raise_on_failure=False)
    wall = time.perf_counter() - started
    if isinstance(result, Exception):
        folder = getattr(result, "report_dir", None)
        record = json.loads((Path(folder) / "rollout.json").read_text()) if folder else {}
        return f"FAILED {type(result).__name__}: {result}", record, wall
    record = json.loads((Path(result["report_dir"]) / "rollout.json").read_text())
    return f"{result['outcome']} {result['new']} (old {result['old']}), traffic {result['traffic']}", record, wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def figures(records) -> dict:
    ok = [r for r in records if r.ok]
    e2e = [r.e2e_s for r in ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {"sent": len(records), "failed": len(records) - len(ok), "e2e50": pct(e2e, 50), "e2e99": pct(e2e, 99),
            "ttft50": pct(ttft, 50), "ttft99": pct(ttft, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=18.0, help="open-loop requests per second")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of the steady window")
    parser.add_argument("--bake", type=float, default=8.0, help="R1_BAKE_SECONDS of the measured rollout")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="r1-bench-zero-downtime-"))
    state_dir = work / "emulator"
    os.environ.update(PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      DO_NOT_TRACK="1", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
                      PREFECT_LOGGING_LEVEL="WARNING")
    for name in [n for n in os.environ if n.startswith("R1_")]:
        del os.environ[name]
    base_env = fast_env(state_dir, work / "reports", ENDPOINT)

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from emulator import process
    from tasks import clients
    from tasks.azureml.endpoint import scoring_base
    from tasks.azureml.scoring import scoring_bearer
    from tasks.loadtest.client import BackgroundLoad, Destination
    from tasks.loadtest.spec import LoadSpec
    from tasks.settings import load_settings

    process.start_detached(state_dir, ["--gpu-quota-cores", "100000"])
    try:
        with prefect_test_harness(server_startup_timeout=180), \
                temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            outcome, _, wall = run_rollout({**base_env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=0, **ENGINE)})
            print(f"rollout 1 (setup): {outcome} in {wall:.1f} s")

            settings = load_settings()
            ml = clients.ml_client(settings)
            base_url = scoring_base(ml.online_endpoints.get(ENDPOINT))
            auth = scoring_bearer(lambda: ml.online_endpoints.get_keys(ENDPOINT))
            dest = Destination(base_url, auth, None, clients.data_plane_ca(settings))
            spec = LoadSpec(rate=args.rate, duration_s=3600, max_tokens=args.max_tokens, model=settings.model_id,
                            seed=7, timeout_s=60)

            green_env = {**base_env, "R1_ENVIRONMENT_VARIABLES": knobs(seed=1, **ENGINE), "R1_MIRROR_PERCENT": "20",
                         "R1_TRAFFIC_STEPS": "[10,50,100]", "R1_BAKE_SECONDS": str(args.bake)}
            with BackgroundLoad(dest, spec) as load:
                time.sleep(WARMUP_S)
                steady = (load.now(), load.now() + args.steady)
                time.sleep(args.steady)
                during_start = load.now()
                outcome, record, wall = run_rollout(green_env)
                during = (during_start, load.now())
                time.sleep(AFTER_S)
                after = (during[1], load.now())
                pending = load.settle(after[1], 60)
                records = load.records()
    finally:
        process.stop(state_dir)

    def within(window):
        return [r for r in records if window[0] <= r.sent_s < window[1]]

    phases = {"steady": within(steady), "during": within(during), "after": within(after)}
    rows = {name: figures(recs) for name, recs in phases.items()}
    spans = {"steady": steady, "during": during, "after": after}

    print(f"\nrollout 2 (measured): {outcome} in {wall:.1f} s")
    for e in record.get("events", []):
        print(f"  {e['t_s']:6.1f} s  {e['step']:<12} {e['status']:<8} {e.get('detail', '')[:110]}")
    print(f"\nopen-loop load {args.rate:g} req/s, streaming, max_tokens {args.max_tokens}, fake engine "
          f"{ENGINE}, {os.cpu_count()} cores")
    print(f"{'phase':<8} {'window s':>9} {'sent':>6} {'failed':>7} {'e2e p50':>8} {'e2e p99':>8} "
          f"{'TTFT p50':>9} {'TTFT p99':>9}   (ms)")
    for name, f in rows.items():
        span = spans[name][1] - spans[name][0]
        print(f"{name:<8} {span:9.1f} {f['sent']:6d} {f['failed']:7d} {f['e2e50']:8.1f} {f['e2e99']:8.1f} "
              f"{f['ttft50']:9.1f} {f['ttft99']:9.1f}")
    s, d = rows["steady"], rows["during"]
    print(f"p99 during / steady: e2e {d['e2e99'] / s['e2e99']:.2f}, TTFT {d['ttft99'] / s['ttft99']:.2f} "
          f"(aim <= 1.25); sent during: {d['sent']} (aim >= 500), "
          f"failed during: {d['failed']} (aim 0)")
    served = Counter(r.deployment for r in phases["during"] if r.ok)
    print(f"served during the rollout: {dict(served)}")

    failed = [r for r in records if not r.ok]
    if failed:
        print(f"\nfailed requests ({len(failed)}), seconds after the rollout started:")
        kinds = Counter((r.error, (r.error_detail or "")[:100], r.deployment) for r in failed)
        for (error, detail, dep), n in kinds.most_common():
            print(f"  {n:4d} x {error} deployment={dep} {detail!r}")
        for r in failed[:20]:
            print(f"  sent {r.sent_s - during[0]:+7.2f} s, after {r.e2e_s * 1000:7.1f} ms: {r.error} "
                  f"{(r.error_detail or '')[:80]!r}")
    if pending:
        print(f"note: {pending} requests sent in the windows were still in flight after 60 s (not counted)")


if __name__ == "__main__":
    main()
