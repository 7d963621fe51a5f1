"""prefect.yaml is what runs: a local Prefect server, `prefect deploy --all`, a process worker,
`prefect deployment run 'build-image/build-image' --watch` building docker/ in the emulator's registry, and
`prefect deployment run 'rollout/rollout' --watch` rolling that image out to the emulator's fake engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.prefect_server_support import deployed_project
from tests.rollout_support import fast_env


def report_events(reports: Path, run_id: str) -> list[dict]:
    return json.loads(next(reports.glob(f"rollout-*-{run_id}/rollout.json")).read_text())["events"]


@pytest.mark.slow
def test_prefect_deployment_run_promotes_and_publishes_artifacts(emulator, tmp_path, unique_name):
    reports = tmp_path / "reports"
    with deployed_project(tmp_path, fast_env(emulator.state_dir, reports, unique_name("deployed"))) as server:
        built = server.cli("deployment", "run", "build-image/build-image", "--watch", "--watch-interval", "1",
                           timeout=600)
        assert built.returncode == 0 and "Completed" in built.stdout, built.stdout + built.stderr
        run = server.cli("deployment", "run", "rollout/rollout", "--param", "bake_seconds=1.5", "--watch",
                         "--watch-interval", "1", timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout

        deployment = server.deployment("rollout/rollout")
        # regions roll out in parallel (one endpoint each); one endpoint's second rollout is refused by its lock
        assert deployment["global_concurrency_limit"] is None
        assert server.deployment("regions/regions")["global_concurrency_limit"]["limit"] == 1
        runs = server.flow_runs(deployment["id"])
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
        assert runs[0]["parameters"] == {"bake_seconds": 1.5}
        artifacts = server.artifacts(runs[0]["id"])
        keys = {a["key"] for a in artifacts}
        run_id = runs[0]["id"][:8]
        assert {f"rollout-{run_id}", f"rollout-{run_id}-timeline", f"rollout-{run_id}-slo",
                f"rollout-{run_id}-progress"} <= keys
        report = next(a for a in artifacts if a["key"] == f"rollout-{run_id}")
        assert report["data"].startswith(f"# Rollout {run_id}: promoted")
        assert "](data:image/png;base64," in report["data"]
        assert list(reports.glob(f"rollout-*-{run_id}/rollout.png"))
        image = next(e for e in report_events(reports, run_id) if e["step"] == "image")
        assert "reused (same build context)" in image["detail"]  # the build-image run's image
        assert list(reports.glob("build-image-*/build.json"))
