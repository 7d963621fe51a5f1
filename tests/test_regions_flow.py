"""Three regions in two waves through a real Prefect server and a process worker, each region its own emulator
(its own location, workspace, quota and registry): all promoted and a re-run converges; a canary failure stops the
rest and a re-run after the fix converges; a workspace in the wrong region and a bad plan refused before any change;
quota exhausted in a wave-2 region stops after that wave."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import clients
from tasks.azureml.endpoint import read_live_state
from tasks.regions.serving import serving_image
from tests.conftest import EmulatorHandle
from tests.prefect_server_support import deployed_project
from tests.rollout_support import REPO_ROOT, cli_env, fast_env, knobs

REGIONS = [{"region": "swedencentral", "workspace": "ws-r1-se"}, {"region": "francecentral", "workspace": "ws-r1-fr"},
           {"region": "germanywestcentral", "workspace": "ws-r1-de"}]
WAVES = [["swedencentral"], ["francecentral", "germanywestcentral"]]
pytestmark = pytest.mark.slow


def start_regions(root: Path, locations: dict[str, str] | None = None, quota: dict[str, int] | None = None) -> dict:
    """One emulator per region under ``root/regions/<region>`` (where the client factory looks for it)."""
    from emulator import process

    handles = {}
    for target in REGIONS:
        region = target["region"]
        state = root / "regions" / region
        args = ["--location", (locations or {}).get(region, region), "--workspace", target["workspace"]]
        if quota and region in quota:
            args += ["--gpu-quota-cores", str(quota[region])]
        process.start_detached(state, args)
        handles[region] = EmulatorHandle(state)
    return handles


def stop_regions(root: Path) -> None:
    from emulator import process

    for state in (root / "regions").glob("*"):
        process.stop(state)


def regional_ml(handle: EmulatorHandle, region: str):
    target = next(t for t in REGIONS if t["region"] == region)
    return clients.ml_client(handle.settings(region=region, workspace=target["workspace"]))


def base_env(root: Path, reports: Path, endpoint: str) -> dict[str, str]:
    return fast_env(root, reports, endpoint, R1_REGIONS=json.dumps(REGIONS), R1_WAVES=json.dumps(WAVES),
                    R1_WAVE_BAKE_SECONDS="1")


def run_regions(server, *job_env: str) -> subprocess.CompletedProcess:
    args = ["deployment", "run", "regions/regions", "--watch", "--watch-interval", "1"]
    for value in job_env:
        args += ["--job-variable", value]
    return server.cli(*args, timeout=900)


def summary(reports: Path) -> dict:
    return json.loads(sorted(reports.glob("regions-*/regions.json"))[-1].read_text())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    handles = start_regions(root)
    reports = root / "reports"
    try:
        with deployed_project(root, base_env(root, reports, "r1-eu")) as server:
            yield server, handles, reports
    finally:
        stop_regions(root)


def test_three_regions_in_two_waves_all_promoted_then_a_rerun_is_a_noop(fleet):
    server, handles, reports = fleet
    run = run_regions(server)
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr
    first = summary(reports)
    assert first["outcome"] == "promoted", first
    by_region = {r["region"]: r for r in first["regions"]}
    assert {r: v["outcome"] for r, v in by_region.items()} == dict.fromkeys(by_region, "promoted")
    canary, fr, de = by_region["swedencentral"], by_region["francecentral"], by_region["germanywestcentral"]
    assert canary["ended"] <= min(fr["started"], de["started"])  # wave 2 starts after the canary
    assert max(fr["started"], de["started"]) < min(fr["ended"], de["ended"])  # and its regions run together
    for region, handle in handles.items():
        ml = regional_ml(handle, region)
        assert read_live_state(ml, "r1-eu").traffic == {"blue": 100}
        assert serving_image(ml, "r1-eu") == by_region[region]["after"]  # built in the region's own registry
        assert ml.workspaces.get(ml.workspace_name).location == region
    assert Path(first["report_dir"], "regions.png").stat().st_size > 0
    runs = server.flow_runs(server.deployment("rollout/rollout")["id"])
    assert sorted(r["name"] for r in runs) == ["rollout-francecentral", "rollout-germanywestcentral",
                                               "rollout-swedencentral"]

    again = run_regions(server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [r["outcome"] for r in summary(reports)["regions"]] == ["no-op"] * 3


def test_a_canary_failure_stops_the_rest_and_a_rerun_after_the_fix_converges(fleet):
    server, handles, reports = fleet
    change = "env=" + json.dumps({"R1_ENVIRONMENT_VARIABLES": knobs(seed=11)})
    assert run_regions(server).returncode == 0  # every region serving (a no-op after the test above)
    before = {r: serving_image(regional_ml(h, r), "r1-eu") for r, h in handles.items()}
    handles["swedencentral"].set_faults(fail_provisioning=["*"])
    try:
        stopped = run_regions(server, change)
    finally:
        handles["swedencentral"].set_faults()
    assert stopped.returncode == 1 and "Failed" in stopped.stdout, stopped.stdout + stopped.stderr
    result = summary(reports)
    assert result["outcome"] == "stopped" and "swedencentral rolled back" in result["reason"], result
    assert [r["outcome"] for r in result["regions"]] == ["rolled back", "not run", "not run"]
    for region, handle in handles.items():  # every region serves what it served before, at 100 %
        ml = regional_ml(handle, region)
        assert serving_image(ml, "r1-eu") == before[region] and sum(read_live_state(ml, "r1-eu").traffic.values()) == 100
    untouched = regional_ml(handles["francecentral"], "francecentral")
    assert sorted(read_live_state(untouched, "r1-eu").deployments) == ["blue"]

    fixed = run_regions(server, change)
    assert fixed.returncode == 0 and "Completed" in fixed.stdout, fixed.stdout + fixed.stderr
    assert [r["outcome"] for r in summary(reports)["regions"]] == ["promoted"] * 3
    for region, handle in handles.items():
        assert read_live_state(regional_ml(handle, region), "r1-eu").traffic == {"green": 100}


def cli(env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.regions", "--json"], cwd=REPO_ROOT, env=cli_env(env, home),
                          capture_output=True, text=True, timeout=600)


def test_a_workspace_in_another_region_is_refused_before_any_change(fleet, tmp_path):
    server = fleet[0]
    root = tmp_path / "elsewhere"
    handles = start_regions(root, locations={"francecentral": "germanywestcentral"})
    try:
        env = {**base_env(root, tmp_path / "reports", "r1-eu"), "PREFECT_API_URL": server.api}
        done = cli(env, tmp_path / "home")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "error: R1_REGIONS: francecentral workspace ws-r1-fr lives in germanywestcentral" in done.stderr
        for region, handle in handles.items():
            assert not read_live_state(regional_ml(handle, region), "r1-eu").endpoint_exists
    finally:
        stop_regions(root)


def test_a_bad_plan_is_refused_one_line_per_problem(tmp_path):
    bad = REGIONS + [{"region": "eastus2", "workspace": "ws-us"}, {"region": "swedencentral", "workspace": "ws-2"}]
    env = fast_env(tmp_path / "none", tmp_path / "reports", "r1-eu", R1_REGIONS=json.dumps(bad),
                   R1_WAVES=json.dumps(WAVES + [["nowhere"]]))
    done = cli(env, tmp_path / "home")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4, done.stderr  # duplicate, not allowed, no target for a wave entry, eastus2 in no wave
    assert not (tmp_path / "none").exists()  # no emulator was even started


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
