"""A two-wave, three-region rollout against the sum of three single-region rollouts run one after another.

    .venv/bin/python bench/regions.py

Starts its own local Prefect server and worker (a temporary home, a free port) and one emulator per region (fake
engine). Baseline: ``python -m flows.rollout --json`` once per region, in turn (endpoint ``bench-seq``), after building the image once in each regional registry. Then
``python -m tasks.prefect_home run regions/regions`` (endpoint ``bench-fleet``: the same first rollout in every region, the image
already built in each regional registry for both) with the canary wave, then the other two regions together,
each a run of the rollout deployment on the worker. Prints each figure and the ratio; the aim is wave 2's regions
in parallel, so the fleet's wall time is well under the sum.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.prefect_home import SETTINGS, free_port  # noqa: E402
from tasks import prefect_home  # noqa: E402

REGIONS = [{"region": "swedencentral", "workspace": "ws-r1-se"}, {"region": "francecentral", "workspace": "ws-r1-fr"},
           {"region": "germanywestcentral", "workspace": "ws-r1-de"}]
WAVES = [["swedencentral"], ["francecentral", "germanywestcentral"]]
# A rollout on Azure is mostly waiting (provisioning, bakes), not the runner's CPU: 10 s bakes per step make the
# fake-engine rollout wait-dominated too, as the regions' parallelism is about waiting together.
BAKE_SECONDS = "10"


def timed(module: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, "--json"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{module} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(lines[-1])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="r1-bench-regions-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("R1_", "PREFECT_", "AZUREML_"))}
    base.update(SETTINGS, R1_BAKE_SECONDS=BAKE_SECONDS, R1_EMULATOR_STATE_DIR=str(work / "emulator"),
                R1_REPORTS_DIR=str(work / "reports"), R1_PREFECT_HOME=str(work / "prefect"),
                R1_PREFECT_PORT=str(free_port()), R1_REGIONS=json.dumps(REGIONS), R1_WAVES=json.dumps(WAVES),
                R1_WAVE_BAKE_SECONDS="0", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PYTHONPATH=str(REPO_ROOT))
    local = prefect_home.Local.from_env(base)
    subprocess.run([sys.executable, "-m", "tasks.prefect_home", "up"], cwd=REPO_ROOT, env=base, check=True,
                   stdout=subprocess.DEVNULL)
    on_server = {**base, **prefect_home.client_env(local)}
    try:
        regional = {t["region"]: {**on_server, "R1_REGION": t["region"], "R1_WORKSPACE": t["workspace"],
                                  "R1_EMULATOR_STATE_DIR": str(work / "emulator" / "regions" / t["region"])}
                    for t in REGIONS}
        for region, env in regional.items():  # the image, built once in each regional registry, for both runs
            print(f"image built in {region}: {timed('flows.build_image', env)[0]:.1f} s (not counted)")
        sequential = []
        for region, env in regional.items():
            wall, outcome = timed("flows.rollout", {**env, "R1_ENDPOINT_NAME": "bench-seq"})
            sequential.append(wall)
            print(f"single-region rollout {region:<20} {outcome['outcome']:<9} {wall:6.1f} s")
        started = time.perf_counter()  # as a user starts it: a run of the regions deployment on the local worker
        subprocess.run([sys.executable, "-m", "tasks.prefect_home", "run", "regions/regions"], cwd=REPO_ROOT,
                       env={**on_server, "R1_ENDPOINT_NAME": "bench-fleet"}, check=True, capture_output=True)
        wall = time.perf_counter() - started
        fleet = json.loads(sorted((work / "reports").glob("regions-*/regions.json"))[-1].read_text())
        for r in fleet["regions"]:
            print(f"  fleet wave {r['wave'] + 1} {r['region']:<20} {r['outcome']:<9} {r['duration_s']:6.1f} s")
    finally:
        subprocess.run([sys.executable, "-m", "tasks.prefect_home", "stop"], cwd=REPO_ROOT, env=base, check=False)
        from emulator import process

        for state in (work / "emulator" / "regions").glob("*"):
            process.stop(state)
    total = sum(sequential)
    print(f"\nthree single-region rollouts one after another: {total:6.1f} s")
    print(f"two waves (canary, then two regions together):  {wall:6.1f} s ({fleet['outcome']})")
    print(f"ratio fleet / sum {wall / total:.2f}")


if __name__ == "__main__":
    main()
