"""The project as a user runs it, for the slow tests: a real `prefect server start` on a free loopback port with
its own home, the project's work pool, `prefect --no-prompt deploy --all` from prefect.yaml and a process worker,
all stopped (by the process groups started here) when the test ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests.ports import free_port
from tests.rollout_support import REPO_ROOT, cli_env

PREFECT = str(Path(sys.executable).with_name("prefect"))
WORK_POOL = "r1-process"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def deployment_names() -> list[str]:
    """The name of every deployment in prefect.yaml (a deployment added there is covered without a test edit)."""
    return [d["name"] for d in yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]]


@dataclass
class PrefectServer:
    """A running server (``api``, ``ui``) and the commands to drive it with the same environment."""

    api: str
    env: dict[str, str]
    log: IO[str]
    started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")

    def spawn(self, *args: str) -> subprocess.Popen:
        """A long-running ``prefect`` command in its own process group, its output in the log."""
        proc = subprocess.Popen([PREFECT, *args], cwd=REPO_ROOT, env=self.env, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([PREFECT, *args], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def must(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        done = self.cli(*args, timeout=timeout)
        assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, trust_env=False, timeout=30)

    def deployment(self, name: str) -> dict[str, Any]:
        """The API's view of ``flow/deployment``."""
        with self.http() as http:
            return http.get(f"/deployments/name/{name}").raise_for_status().json()

    def flow_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        with self.http() as http:
            body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
            return http.post("/flow_runs/filter", json=body).raise_for_status().json()

    def wait_finished(self, flow_run_id: str, timeout_s: float = 600) -> dict[str, Any]:
        """The flow run once it reached a terminal state."""
        deadline = time.monotonic() + timeout_s
        with self.http() as http:
            while time.monotonic() < deadline:
                run = http.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
                if run["state"] and run["state"]["type"] in TERMINAL:
                    return run
                time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} not finished after {timeout_s:.0f} s")

    def artifacts(self, flow_run_id: str) -> list[dict[str, Any]]:
        with self.http() as http:
            body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
            return http.post("/artifacts/filter", json=body).raise_for_status().json()


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the process group we started, then kill it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_healthy(server: PrefectServer, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "prefect server exited"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.api}/health", timeout=2, trust_env=False).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError("prefect server did not become healthy")


@contextlib.contextmanager
def deployed_project(tmp_path: Path, r1_env: dict[str, str], services: bool = False) -> Iterator[PrefectServer]:
    """Server, work pool, every deployment of prefect.yaml and a worker; the worker runs flows with ``r1_env``.
    ``services``: the server's services too (automations need them: events reach triggers only through them).

    The UI is told the server's own API URL (PREFECT_UI_API_URL): on a port other than 4200 it would
    otherwise call http://127.0.0.1:4200/api and show "Can't connect to Server API"."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = cli_env({**r1_env, "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api, "R1_REPO_DIR": str(REPO_ROOT),
                   "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                   "PREFECT_API_LOG_RETRYABLE_ERRORS": "true"},  # a 503 says why in prefect.log
                  tmp_path / "prefect-home")
    with open(tmp_path / "prefect.log", "w") as log:
        server = PrefectServer(api, env, log)
        try:
            # no services: with them, SQLite contention answers the UI's Run form with a 503 on a busy machine
            # (the UI does not retry); the price is that task runs are not recorded (no graph on the run page)
            proc = server.spawn("server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off",
                                *([] if services else ["--no-services"]))
            _wait_healthy(server, proc)
            server.must("work-pool", "create", WORK_POOL, "--type", "process")
            server.must("--no-prompt", "deploy", "--all")
            server.spawn("worker", "start", "--pool", WORK_POOL, "--name", "r1-test-worker")
            yield server
        finally:
            for started in reversed(server.started):
                _stop(started)


def create_run(server: PrefectServer, name: str, parameters: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """A run of ``name`` as the UI's Run creates it (``env`` as its job variable); its id. With services on, SQLite
    contention can answer 503 (the UI does not retry either): tried again a few times."""
    with server.http() as http:
        for _ in range(10):
            run = http.post(f"/deployments/{server.deployment(name)['id']}/create_flow_run",
                            json={"parameters": parameters, "job_variables": {"env": env or {}}})
            if run.status_code != 503:
                break
            time.sleep(2)
    return run.raise_for_status().json()["id"]


def run_deployment(server: PrefectServer, name: str, parameters: dict[str, Any],
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """A run of ``name`` on the worker, once finished."""
    return server.wait_finished(create_run(server, name, parameters, env))


def runs_of(server: PrefectServer, name: str) -> list[dict[str, Any]]:
    return server.flow_runs(server.deployment(name)["id"])


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")
