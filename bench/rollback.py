"""How fast the previous colour serves 100 % again: rollback from warm, from retired, against a full rollout.

    .venv/bin/python bench/rollback.py [--rounds 3]

Starts its own emulator and Prefect home (fake engine, short bakes, traffic steps 25/100 %). Each round on one
endpoint kept warm: a full rollout stages and promotes a new image over image A (the baseline: what rolling back
by rolling forward again would cost), then ``rollback`` puts A back in one traffic update. Then, on a second endpoint with
the old colour retired, ``rollback`` stages A again through the rollout's gates. Figures: the rollback's own
``seconds_to_100`` (flow start to the previous colour at 100 %) and each call's wall time (Prefect included).
Round 0 warms up (Prefect's ephemeral server start, imports) and is printed but not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

IMAGE_A = "local/fake-engine@sha256:" + "a" * 64
IMAGE_B = "local/fake-engine@sha256:" + "b" * 64


def new_image(i: int) -> str:
    """A digest of its own per round, so each baseline rollout stages a colour (no resume of a warm one)."""
    return "local/fake-engine@sha256:" + f"{i + 16:02x}" * 32
SETTINGS = {
    "R1_BAKE_SECONDS": "1.5", "R1_TRAFFIC_STEPS": "[25,100]", "R1_LOAD_GATE__BAKE_RATE": "40",
    "R1_LOAD_GATE__REQUESTS": "12", "R1_SLO__MIN_REQUESTS": "5", "R1_PROBES__READINESS__INITIAL_DELAY": "1",
    "R1_PROBES__READINESS__PERIOD": "1", "R1_PROBES__READINESS__FAILURE_THRESHOLD": "10",
    "R1_WORKLOAD__MODEL_LOAD_SECONDS": "5", "R1_AUTH_MODE": "key",
}


def timed(call, **kwargs) -> tuple[dict, float]:
    started = time.perf_counter()
    result = call(return_state=True, **kwargs).result()
    return result, time.perf_counter() - started


def promote(rollout, image: str) -> float:
    os.environ["R1_IMAGE"] = image
    result, wall = timed(rollout)
    assert result["outcome"] == "promoted", result
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="r1-bench-rollback-"))
    os.environ.update(SETTINGS, R1_EMULATOR_STATE_DIR=str(work / "emulator"), R1_REPORTS_DIR=str(work / "reports"),
                      PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PREFECT_LOGGING_LEVEL="WARNING")
    from emulator import process
    from flows.rollback import rollback
    from flows.rollout import rollout

    process.start_detached(work / "emulator", ["--gpu-quota-cores", "100000"])
    rows = []
    try:
        os.environ.update(R1_ENDPOINT_NAME="bench-rollback-warm", R1_KEEP_OLD_WARM="true")
        promote(rollout, IMAGE_A)
        for i in range(args.rounds + 1):
            full = promote(rollout, new_image(i))
            back, wall = timed(rollback, reason=f"bench round {i}")
            assert (back["case"], back["serving"]) == ("warm", "blue"), back
            row = {"full rollout": full, "warm to 100 %": back["seconds_to_100"], "warm wall": wall}
            print(f"round {i}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()))
            if i:
                rows.append(row)
        os.environ.update(R1_ENDPOINT_NAME="bench-rollback-retired", R1_KEEP_OLD_WARM="false")
        promote(rollout, IMAGE_A)
        promote(rollout, IMAGE_B)
        retired, retired_wall = timed(rollback, reason="bench retired")
        assert retired["case"] == "restage", retired
    finally:
        process.stop(work / "emulator")
    print(f"\nmedian of {len(rows)} rounds (fake engine, bake 1.5 s, steps 25/100 %):")
    for key in rows[0]:
        print(f"  {key:<16} {statistics.median(r[key] for r in rows):7.2f} s")
    print(f"  retired to 100 % {retired['seconds_to_100']:7.2f} s (wall {retired_wall:.2f} s, one run; "
          f"{retired['spec']})")


if __name__ == "__main__":
    main()
