"""Benchmark the emulator's control plane as the SDK sees it: start-up, each SDK call of a blue/green
rollout on the fake engine, and a restart (SIGTERM and SIGKILL) until the deployment serves again.

    .venv/bin/python bench/emulator.py [--rounds 3]

Prints the median and max seconds per step over the rounds (a fresh emulator each round).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.ai.ml.entities import (  # noqa: E402
    Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, ProbeSettings,
)

from emulator import process  # noqa: E402
from emulator.layout import StateDir  # noqa: E402
from tasks import clients  # noqa: E402
from tasks.loadtest.client import tls_context  # noqa: E402
from tasks.settings import load_settings  # noqa: E402


def deployment(endpoint: str, name: str) -> ManagedOnlineDeployment:
    route = {"port": 8000, "path": "/health"}
    return ManagedOnlineDeployment(
        name=name, endpoint_name=endpoint, instance_type="Standard_NC24ads_A100_v4", instance_count=1,
        environment=Environment(image="local/fake-engine:1", inference_config={
            "liveness_route": route, "readiness_route": route, "scoring_route": {"port": 8000, "path": "/"}}),
        readiness_probe=ProbeSettings(initial_delay=1, period=1, timeout=1, failure_threshold=30),
    )


def ready(state: StateDir, settings, endpoint: str, dep: str) -> None:
    ml = clients.ml_client(settings)
    while ml.online_deployments.get(dep, endpoint).provisioning_state.lower() != "succeeded":
        time.sleep(0.05)
    key = ml.online_endpoints.get_keys(endpoint).primary_key
    import httpx

    url = ml.online_endpoints.get(endpoint).scoring_uri.removesuffix("/score") + "/v1/completions"
    verify = tls_context(clients.data_plane_ca(settings))
    while True:
        answer = httpx.post(url, json={"model": "m", "prompt": "hi", "max_tokens": 2},
                            headers={"Authorization": f"Bearer {key}"}, verify=verify)
        if answer.status_code == 200:
            return
        time.sleep(0.05)


def one_round(times: dict[str, list[float]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = StateDir(Path(tmp))
        settings = load_settings(target="local", emulator_state_dir=state.root)

        def step(name: str, fn):
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
            return result

        step("start emulator (detached, until ready)", lambda: process.start_detached(state.root, []))
        try:
            ml = clients.ml_client(settings)
            step("workspace get", lambda: ml.workspaces.get(settings.workspace))
            step("endpoint create", lambda: ml.online_endpoints.begin_create_or_update(
                ManagedOnlineEndpoint(name="bench-ep", auth_mode="key")).result())
            step("deployment create (fake engine, 1 s probes)",
                 lambda: ml.online_deployments.begin_create_or_update(deployment("bench-ep", "blue")).result())
            step("deployment create, 2nd colour",
                 lambda: ml.online_deployments.begin_create_or_update(deployment("bench-ep", "green")).result())

            def shift(traffic):
                ep = ml.online_endpoints.get("bench-ep")
                ep.traffic = traffic
                return ml.online_endpoints.begin_create_or_update(ep).result()

            step("traffic update (get + full PUT)", lambda: shift({"blue": 90, "green": 10}))
            step("get_keys", lambda: ml.online_endpoints.get_keys("bench-ep"))
            step("regenerate key", lambda: ml.online_endpoints.begin_regenerate_keys(
                "bench-ep", key_type="secondary").result())
            step("get_logs", lambda: ml.online_deployments.get_logs("blue", "bench-ep", lines=50))
            shift({"blue": 100})
            step("deployment delete", lambda: ml.online_deployments.begin_delete("green", "bench-ep").result())
            step("stop (SIGTERM) + restart until serving again", lambda: (
                process.stop(state.root), process.start_detached(state.root, []),
                ready(state, settings, "bench-ep", "blue")))
            pid = process.running_pid(state)

            def kill_and_restart():
                os.kill(pid, signal.SIGKILL)
                while process.running_pid(state) is not None:
                    time.sleep(0.02)
                process.start_detached(state.root, [])
                ready(state, settings, "bench-ep", "blue")

            step("SIGKILL + restart until serving again", kill_and_restart)
            step("endpoint delete", lambda: clients.ml_client(settings).online_endpoints.begin_delete("bench-ep").result())
        finally:
            process.stop(state.root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clients.silence_poll_dots()
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        one_round(times)
    width = max(map(len, times))
    print(f"{'step':<{width}}  median s    max s   ({args.rounds} rounds, {os.cpu_count()} cores)")
    for name, values in times.items():
        print(f"{name:<{width}}  {statistics.median(values):8.3f} {max(values):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
