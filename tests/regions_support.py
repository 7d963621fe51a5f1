"""Three regions, each its own emulator (its own location, workspace, quota and registry), behind one Prefect server
and process worker: what the regions flow tests share (two files, so the two test workers each take some)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import clients
from tests.conftest import EmulatorHandle
from tests.prefect_server_support import deployed_project
from tests.rollout_support import REPO_ROOT, cli_env, fast_env

REGIONS = [{"region": "swedencentral", "workspace": "ws-r1-se"}, {"region": "francecentral", "workspace": "ws-r1-fr"},
           {"region": "germanywestcentral", "workspace": "ws-r1-de"}]
WAVES = [["swedencentral"], ["francecentral", "germanywestcentral"]]
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


def cli(env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.regions", "--json"], cwd=REPO_ROOT, env=cli_env(env, home),
                          capture_output=True, text=True, timeout=600)
