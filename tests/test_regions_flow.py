"""Three regions in two waves through a real Prefect server and a process worker (tests/regions_support.py): all
promoted and a re-run converges; a canary failure stops the rest and a re-run after the fix converges; a workspace
in the wrong region and a bad plan refused before any change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.azureml.endpoint import read_live_state
from tasks.regions.serving import serving_image
from tests.regions_support import (  # noqa: F401  (fleet: a fixture)
    REGIONS, WAVES, base_env, cli, fleet, regional_ml, run_regions, start_regions, stop_regions, summary,
)
from tests.rollout_support import fast_env, knobs

pytestmark = pytest.mark.slow


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
