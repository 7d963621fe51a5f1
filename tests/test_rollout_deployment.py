"""prefect.yaml is what runs: a local Prefect server, `prefect deploy --all`, a process worker,
`prefect deployment run 'build-image/build-image' --watch` building docker/ in the emulator's registry, and
`prefect deployment run 'rollout/rollout' --watch` rolling that image out to the emulator's fake engine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.rollout_support import REPO_ROOT, cli_env, fast_env


def report_events(reports: Path, run_id: str) -> list[dict]:
    return json.loads(next(reports.glob(f"rollout-*-{run_id}/rollout.json")).read_text())["events"]


PREFECT = str(Path(os.sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the process group we started, then kill it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_healthy(api: str, server: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "prefect server exited"
        try:
            if httpx.get(f"{api}/health", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("prefect server did not become healthy")


@pytest.mark.slow
def test_prefect_deployment_run_promotes_and_publishes_artifacts(emulator, tmp_path, unique_name):
    api = f"http://127.0.0.1:{_free_port()}/api"
    home = tmp_path / "prefect-home"
    endpoint = unique_name("deployed")
    env = cli_env({**fast_env(emulator.state_dir, tmp_path / "reports", endpoint),
                   "PREFECT_API_URL": api, "R1_REPO_DIR": str(REPO_ROOT),
                   "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}, home)
    log = open(tmp_path / "prefect.log", "w")
    started: list[subprocess.Popen] = []

    def spawn(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([PREFECT, *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        started.append(proc)
        return proc

    def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([PREFECT, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    try:
        server = spawn("server", "start", "--host", "127.0.0.1", "--port", api.split(":")[-1].split("/")[0],
                       "--analytics-off", "--no-services")
        _wait_healthy(api, server)
        created = cli("work-pool", "create", "r1-process", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = cli("--no-prompt", "deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        spawn("worker", "start", "--pool", "r1-process", "--name", "r1-test-worker")
        built = cli("deployment", "run", "build-image/build-image", "--watch", "--watch-interval", "1", timeout=600)
        assert built.returncode == 0 and "Completed" in built.stdout, built.stdout + built.stderr
        run = cli("deployment", "run", "rollout/rollout", "--param", "bake_seconds=1.5", "--watch",
                  "--watch-interval", "1", timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout

        http = httpx.Client(base_url=api, trust_env=False, timeout=30)
        deployment = http.get("/deployments/name/rollout/rollout").json()
        assert deployment["global_concurrency_limit"]["limit"] == 1
        runs = http.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}}).json()
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
        assert runs[0]["parameters"] == {"bake_seconds": 1.5}
        by_run = {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}}
        artifacts = http.post("/artifacts/filter", json=by_run).json()
        keys = {a["key"] for a in artifacts}
        run_id = runs[0]["id"][:8]
        assert {f"rollout-{run_id}", f"rollout-{run_id}-timeline"} <= keys
        report = next(a for a in artifacts if a["key"] == f"rollout-{run_id}")
        assert report["data"].startswith(f"# Rollout {run_id}: promoted")
        assert list((tmp_path / "reports").glob(f"rollout-*-{run_id}/rollout.png"))
        image = next(e for e in report_events(tmp_path / "reports", run_id) if e["step"] == "image")
        assert "reused (same build context)" in image["detail"]  # the build-image run's image
        assert list((tmp_path / "reports").glob("build-image-*/build.json"))
    finally:
        for proc in reversed(started):
            _stop(proc)
        log.close()
