"""The local Prefect server as the default home: decisions (which API wins, URLs, schedules, a run's job
variables) as plain functions, then one real server on a free port and a temporary home, shared by the
slow tests: started once by two concurrent `up`s, its deployments and schedules, two commands at once, and
a rollout as a deployment run on the local worker (what ./r1 demo does)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tasks import prefect_home as ph
from tests.ports import free_port
from tests.rollout_support import REPO_ROOT, cli_env, fast_env

LOCAL = ph.Local(Path("/tmp/home"), 4321)


# Decisions -------------------------------------------------------------------------------------------
def test_local_defaults_to_the_repository_home_on_4200():
    local = ph.Local.from_env({})
    assert (local.home, local.port) == (REPO_ROOT / ".r1" / "prefect", 4200)
    assert (local.ui_url, local.api_url) == ("http://127.0.0.1:4200", "http://127.0.0.1:4200/api")
    assert ph.Local.from_env({"R1_PREFECT_PORT": "4321", "R1_PREFECT_HOME": "/tmp/home"}) == LOCAL


def test_a_users_own_api_wins_over_the_local_server(tmp_path):
    no_profile = {"PREFECT_HOME": str(tmp_path)}
    assert ph.user_api_url(no_profile, LOCAL) is None
    assert ph.user_api_url({**no_profile, "PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a/workspaces/w"},
                           LOCAL).startswith("https://api.prefect.cloud")
    # the exports of an earlier `up` name the local server itself: still ours
    assert ph.user_api_url({**no_profile, "PREFECT_API_URL": "http://127.0.0.1:4321/api/"}, LOCAL) is None


def test_the_active_profile_counts_as_the_users_choice(tmp_path):
    (tmp_path / "profiles.toml").write_text(
        'active = "cloud"\n[profiles.cloud]\nPREFECT_API_URL = "https://team.example/api"\n[profiles.ephemeral]\n')
    env = {"PREFECT_HOME": str(tmp_path)}
    assert ph.user_api_url(env, LOCAL) == "https://team.example/api"
    assert ph.user_api_url({**env, "PREFECT_PROFILE": "ephemeral"}, LOCAL) is None
    (tmp_path / "profiles.toml").write_text("not toml [")
    assert ph.user_api_url(env, LOCAL) is None


def test_commands_and_the_ui_get_the_servers_own_api_url():
    env = ph.client_env(LOCAL)
    assert env["PREFECT_API_URL"] == env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_HOME"] == "/tmp/home"
    assert ph.exports({"A": "x y", "B": "it's"}) == "export A='x y'\nexport B='it'\"'\"'s'\n"
    assert ph.flow_run_url("http://127.0.0.1:4321/", "abc") == "http://127.0.0.1:4321/runs/flow-run/abc"


def test_a_profile_reads_as_r1_reads_it(tmp_path):
    (tmp_path / "p.env").write_text("# comment\nR1_A=1\nR1_STEPS='[10,100]'\nnot a line\n")
    assert ph.profile(tmp_path / "p.env") == {"R1_A": "1", "R1_STEPS": "[10,100]"}


def test_schedules_run_only_when_asked_for():
    assert [ph.schedules_active(e) for e in ({}, {"R1_SCHEDULES": "off"}, {"R1_SCHEDULES": " ON "})] == [
        False, False, True]
    keys = {ph.registration_key(y, a) for y in (b"a", b"b") for a in (False, True)}
    assert len(keys) == 4  # prefect.yaml or R1_SCHEDULES changed: registered again


def test_a_run_gets_the_settings_the_worker_lacks_but_no_secret():
    worker = ph.digests({"R1_ENDPOINT_NAME": "r1-local", "R1_VLLM__MAX_NUM_SEQS": "32", "R1_HF_TOKEN": "old",
                         "PATH": "/bin"})
    assert "PATH" not in worker
    caller = {"R1_ENDPOINT_NAME": "r1-local", "R1_VLLM__MAX_NUM_SEQS": "12", "R1_HF_TOKEN": "new",
              "R1_BAKE_SECONDS": "3", "HOME": "/root"}
    assert ph.job_env(worker, caller) == ({"R1_VLLM__MAX_NUM_SEQS": "12", "R1_BAKE_SECONDS": "3"}, ["R1_HF_TOKEN"])


def test_up_with_a_users_own_api_starts_and_prints_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://team.example/api")
    monkeypatch.setenv("R1_PREFECT_HOME", str(tmp_path / "home"))
    assert ph.main(["up"]) == 0
    assert capsys.readouterr().out == "" and not (tmp_path / "home").exists()
    assert ph.main(["status"]) == 0
    assert "your own, http://team.example/api" in capsys.readouterr().out


FLOWS = {"plan": "flows.plan:plan", "build-image": "flows.build_image:build_image",
         "rollout": "flows.rollout:rollout", "loadtest": "flows.loadtest:loadtest", "regions": "flows.regions:regions",
         "rollback": "flows.rollback:rollback", "guard": "flows.guard:guard", "redeploy": "flows.redeploy:redeploy",
         "rotate-keys": "flows.rotate_keys:rotate_keys", "status": "flows.status:status",
         "teardown": "flows.teardown:teardown"}
SCHEDULES = {"plan": ["0 6 * * *"], "redeploy": ["0 5 * * 1"], "rotate-keys": ["0 5 1 * *"], "status": ["15 * * * *"]}


def test_every_flow_is_a_deployment_and_the_periodic_ones_are_scheduled():
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    entries = {d["name"]: d for d in config["deployments"]}
    assert {name: e["entrypoint"].replace("/", ".").replace(".py:", ":") for name, e in entries.items()} == {
        name: target for name, target in FLOWS.items()}
    assert all(e["work_pool"]["name"] == ph.WORK_POOL and "r1" in e["tags"] for e in entries.values())
    assert {name: [s["cron"] for s in e["schedules"]] for name, e in entries.items() if e.get("schedules")} == SCHEDULES


# One real server ---------------------------------------------------------------------------------------

def _module(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


class Server:
    def __init__(self, root: Path):
        self.local = ph.Local(root / "prefect", free_port())
        self.env = cli_env({"R1_PREFECT_HOME": str(self.local.home), "R1_PREFECT_PORT": str(self.local.port),
                            "R1_EMULATOR_STATE_DIR": str(root / "no-emulator"),
                            "R1_REPORTS_DIR": str(root / "reports")}, root / "user-home")
        self.http = httpx.Client(base_url=self.local.api_url, trust_env=False, timeout=30)

    def up(self, **extra: str) -> subprocess.Popen:
        return _module({**self.env, **extra}, "tasks.prefect_home", "up")

    def command_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **ph.client_env(self.local), **extra}

    def pid(self) -> int:
        return json.loads(self.local.file("server.json").read_text())["pid"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Started by two `up`s at once (one must wait for the other and reuse its server); stopped afterwards."""
    s = Server(tmp_path_factory.mktemp("prefect-home"))
    s.first = [_finish(p) for p in [s.up(), s.up()]]
    yield s
    _finish(_module(s.env, "tasks.prefect_home", "stop"))


@pytest.mark.slow
def test_the_server_is_started_once_and_reused(server):
    (code1, out1, err1), (code2, out2, err2) = server.first
    assert (code1, code2) == (0, 0), err1 + err2
    assert out1 == out2 == ph.exports(ph.client_env(server.local))
    assert (err1 + err2).count("starting the local Prefect server") == 1
    pid = server.pid()
    assert ph.alive(pid, "server")
    code, out, err = _finish(server.up())
    assert (code, err, server.pid()) == (0, "", pid)  # found, nothing started or registered
    listening = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                 if re.search(rb"server\x00start\x00.*--port\x00%d\x00" % server.local.port, _read(p))]
    assert len(listening) == 1
    assert f"server: up {server.local.ui_url} pid {pid}" in _finish(_module(server.env, "tasks.prefect_home",
                                                                             "status"))[1]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_every_deployment_is_registered_with_its_parameters(server):
    import importlib

    for name, target in FLOWS.items():
        module, attr = target.split(":")
        flow = getattr(importlib.import_module(module), attr)
        deployment = server.http.get(f"/deployments/name/{name}/{name}").json()
        assert set(deployment["parameter_openapi_schema"]["properties"]) == set(
            inspect.signature(flow.fn).parameters), name
        assert deployment["work_pool_name"] == ph.WORK_POOL
    assert server.http.get(f"/work_pools/{ph.WORK_POOL}").json()["type"] == "process"


@pytest.mark.slow
def test_schedules_are_paused_unless_asked_for(server):
    def plan_schedules() -> list[tuple[str, bool]]:
        deployment = server.http.get("/deployments/name/plan/plan").json()
        return [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]]

    assert plan_schedules() == [("0 6 * * *", False)]
    assert _finish(server.up(R1_SCHEDULES="on"))[0] == 0
    assert plan_schedules() == [("0 6 * * *", True)]
    assert _finish(server.up())[0] == 0
    assert plan_schedules() == [("0 6 * * *", False)]


@pytest.mark.slow
def test_two_commands_at_once_both_complete(server, tmp_path):
    env = server.command_env(R1_REPORTS_DIR=str(tmp_path / "reports"))
    both = [_finish(p) for p in [_module(env, "flows.plan", "--json") for _ in range(2)]]
    for code, out, err in both:
        assert code == 0, err
        assert json.loads(out.splitlines()[-1])["ok"]
        assert "database is locked" not in out + err
        assert f"run: {server.local.ui_url}/runs/flow-run/" in err
    assert "Starting temporary server" not in "".join(err for _, _, err in both)


@pytest.mark.slow
def test_a_rollout_runs_as_a_deployment_run_on_the_local_worker(server, emulator, tmp_path, unique_name):
    """./r1 demo's mechanism: `run rollout/rollout` through the worker, then a changed engine argument sent as
    the run's job variables, which stages the other colour."""
    settings = {**ph.profile(REPO_ROOT / "profiles" / "local-fake.env"),
                **fast_env(emulator.state_dir, tmp_path / "reports", unique_name("home"))}
    env = server.command_env(**settings)
    code, out, err = _finish(_module(env, "tasks.prefect_home", "run", "rollout/rollout", "--param",
                                     "bake_seconds=1.5"))
    assert code == 0, err
    assert "rollout/rollout: Completed" in err and "rollout promoted: blue serves 100 %" in err
    assert re.fullmatch(rf"{server.local.ui_url}/runs/flow-run/[0-9a-f-]{{36}}\n", out)
    code, out, err = _finish(_module({**env, "R1_VLLM__MAX_NUM_SEQS": "12"}, "tasks.prefect_home", "run",
                                     "rollout/rollout"))
    assert code == 0, err
    assert "rollout promoted: green serves 100 %" in err
    run = server.http.get(f"/flow_runs/{out.strip().rsplit('/', 1)[-1]}").json()
    assert run["job_variables"] == {"env": {"R1_VLLM__MAX_NUM_SEQS": "12"}}
    assert run["state"]["type"] == "COMPLETED"
    assert ph.alive(json.loads(server.local.file("worker.json").read_text())["pid"], "worker")
