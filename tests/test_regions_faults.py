"""The regions flow meeting faults (tests/regions_support.py): quota exhausted in a wave-2 region stops after that
wave; the regions run killed mid-wave, then a re-run converges; no worker polling the pool is refused."""

from __future__ import annotations

import json

import pytest

from tasks.azureml.endpoint import read_live_state
from tasks.regions.serving import serving_image
from tests.regions_support import (  # noqa: F401  (fleet: a fixture)
    base_env, cli, fleet, regional_ml, run_regions, start_regions, stop_regions, summary,
)
from tests.rollout_support import knobs

pytestmark = pytest.mark.slow


def test_quota_exhausted_in_a_wave_two_region_stops_after_that_wave(fleet, tmp_path):
    server = fleet[0]
    root = tmp_path / "quota"
    handles = start_regions(root, quota={"germanywestcentral": 0})
    try:
        env = "env=" + json.dumps({"R1_EMULATOR_STATE_DIR": str(root)})
        run = run_regions(server, env)
        assert run.returncode == 1 and "Failed" in run.stdout, run.stdout + run.stderr
        result = summary(fleet[2])
        by_region = {r["region"]: r for r in result["regions"]}
        assert result["outcome"] == "stopped", result
        assert (by_region["swedencentral"]["outcome"], by_region["francecentral"]["outcome"]) == ("promoted",) * 2
        assert by_region["germanywestcentral"]["outcome"] in ("refused", "failed", "rolled back")
        assert "quota" in by_region["germanywestcentral"]["reason"].lower(), by_region["germanywestcentral"]
        assert serving_image(regional_ml(handles["germanywestcentral"], "germanywestcentral"), "r1-eu") is None
    finally:
        stop_regions(root)


def test_a_kill_of_the_regions_run_mid_wave_then_a_rerun_converges(fleet, wait_for):
    server, handles, reports = fleet
    change = "env=" + json.dumps({"R1_ENVIRONMENT_VARIABLES": knobs(seed=12)})
    started = server.must("deployment", "run", "regions/regions", "--job-variable", change)
    parent = next(line.split("UUID:")[1].strip() for line in started.stdout.splitlines() if "UUID:" in line)
    rollouts = server.deployment("rollout/rollout")["id"]
    known = {r["id"] for r in server.flow_runs(rollouts)}

    def wave_two_running() -> bool:
        fresh = [r for r in server.flow_runs(rollouts) if r["id"] not in known]
        return any(r["name"] != "rollout-swedencentral" and r["state"]["type"] == "RUNNING" for r in fresh)

    wait_for(wave_two_running, timeout=600, what="a wave-2 region's rollout running")
    server.must("flow-run", "cancel", parent)  # the worker kills the regions run's process
    assert server.wait_finished(parent, 120)["state"]["type"] in ("CANCELLED", "CRASHED")

    again = run_regions(server, change)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["outcome"] for r in summary(reports)["regions"]} <= {"promoted", "no-op"}
    specs = set()
    for region, handle in handles.items():  # every region serves one spec, the same everywhere, at 100 %
        live = read_live_state(regional_ml(handle, region), "r1-eu")
        [(colour, share)] = live.traffic.items()
        assert share == 100 and not live.mirror
        specs.add(live.deployments[colour].spec_hash)
    assert len(specs) == 1


def test_without_a_worker_the_fleet_is_refused_instead_of_waiting_forever(tmp_path):
    root = tmp_path / "alone"
    start_regions(root)
    try:
        done = cli(base_env(root, tmp_path / "reports", "r1-eu"), tmp_path / "home")  # a temporary server: no worker
        assert done.returncode == 2, done.stdout + done.stderr
        assert "error: no worker polls the r1-process work pool" in done.stderr
    finally:
        stop_regions(root)
