"""A no-op rollout from the command line against the running local Prefect server vs Prefect's temporary one.

    .venv/bin/python bench/prefect_home.py [--rounds 3]

Starts its own emulator and local server (a temporary home, a free port), rolls out once on the fake engine,
then times ``python -m flows.rollout --json`` again with the same settings (a no-op: the endpoint already
serves the spec), alternating: against the local server, and with ``PREFECT_API_URL`` unset and a fresh
``PREFECT_HOME`` (what every command did before: start a temporary server, migrate its database, stop it).
Prints each round, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tasks import prefect_home  # noqa: E402

# The fake engine's profile (the image built once from docker/ on its base, then reused), no bake
SETTINGS = {**prefect_home.profile(REPO_ROOT / "profiles" / "local-fake.env"), "R1_BAKE_SECONDS": "0",
            "R1_TRAFFIC_STEPS": "[50,100]", "R1_AUTH_MODE": "key", "R1_ENDPOINT_NAME": "bench-home"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rollout(env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, outcome) of one `python -m flows.rollout --json`."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.rollout", "--json"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"rollout failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(lines[-1])["outcome"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="r1-bench-home-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("R1_", "PREFECT_", "AZUREML_"))}
    base.update(SETTINGS, R1_EMULATOR_STATE_DIR=str(work / "emulator"), R1_REPORTS_DIR=str(work / "reports"),
                R1_PREFECT_HOME=str(work / "prefect"), R1_PREFECT_PORT=str(free_port()), DO_NOT_TRACK="1",
                PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
                PYTHONPATH=str(REPO_ROOT))
    local = prefect_home.Local.from_env(base)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tasks.prefect_home", "up"], cwd=REPO_ROOT, env=base, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"local server up (first start, deployments registered): {time.perf_counter() - started:.1f} s")
    on_server = {**base, **prefect_home.client_env(local)}
    times: dict[str, list[float]] = {"local server": [], "temporary server": []}
    try:
        wall, outcome = rollout(on_server)
        print(f"first rollout (not counted): {outcome} in {wall:.1f} s")
        for i in range(args.rounds):
            for mode, env in (("local server", on_server),
                              ("temporary server", {**base, "PREFECT_HOME": str(work / f"fresh-home-{i}")})):
                wall, outcome = rollout(env)
                assert outcome == "no-op", outcome
                times[mode].append(wall)
                print(f"round {i}: {mode:<17} {outcome} in {wall:6.2f} s")
    finally:
        subprocess.run([sys.executable, "-m", "tasks.prefect_home", "stop"], cwd=REPO_ROOT, env=base, check=False)
    local_s, temporary_s = (statistics.median(times[m]) for m in ("local server", "temporary server"))
    print(f"\nmedian of {args.rounds} no-op `python -m flows.rollout --json`:")
    print(f"  against the running local server   {local_s:6.2f} s")
    print(f"  with a temporary server (fresh home) {temporary_s:6.2f} s")
    print(f"  ratio {temporary_s / local_s:.1f}x")


if __name__ == "__main__":
    main()
