"""The repository's own Prefect server, as the emulator is its own Azure: one per checkout, started in the
background on first use and reused, so each command talks to a running API instead of starting (and throwing
away) a temporary server on a SQLite file other commands share.

    python -m tasks.prefect_home up        ensure the server; print the `export` lines commands need
    python -m tasks.prefect_home status    the server and the worker, one line each
    python -m tasks.prefect_home run FLOW/DEPLOYMENT [--param NAME=JSON ...]
                                           a deployment run on the local process worker, waited for;
                                           the run's UI URL is the one line on stdout
    python -m tasks.prefect_home stop      stop the worker, the server and the emulator

Home ``R1_PREFECT_HOME`` (default ``.r1/prefect``), port ``R1_PREFECT_PORT`` (default 4200), 127.0.0.1 only.
A user's own ``PREFECT_API_URL`` (in the environment or the active Prefect profile: Prefect Cloud, a team
server) wins: then no server is started and nothing is registered. Exit 0 ok; 1 a run did not complete or a
process could not be started (its log's path is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
WORK_POOL = "r1-process"
SECRET_WORDS = ("SECRET", "TOKEN", "KEY", "PASSWORD")  # never sent as a run's job variables (the UI shows them)


class HomeError(RuntimeError):
    """A server or worker could not be started; the message names its log."""


@dataclass(frozen=True)
class Local:
    """Where the local server lives and answers."""

    home: Path
    port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Local:
        home = Path(environ.get("R1_PREFECT_HOME") or REPO_ROOT / ".r1" / "prefect")
        return cls(home.resolve(), int(environ.get("R1_PREFECT_PORT") or 4200))

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def file(self, name: str) -> Path:
        return self.home / name


# Decisions -------------------------------------------------------------------------------------------
def user_api_url(environ: Mapping[str, str], local: Local) -> str | None:
    """The API a user chose (environment first, then the active profile), unless it is this local server."""
    chosen = environ.get("PREFECT_API_URL") or _profile_api_url(environ)
    return chosen if chosen and chosen.rstrip("/") != local.api_url else None


def _profile_api_url(environ: Mapping[str, str]) -> str | None:
    """PREFECT_API_URL of the active profile in the user's profiles.toml (`prefect cloud login` writes it there)."""
    home = Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    path = Path(environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = environ.get("PREFECT_PROFILE") or profiles.get("active", "")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")


def client_env(local: Local) -> dict[str, str]:
    """What a command, worker or server needs to use the local server (the UI needs its API URL too on a
    port other than 4200, or it shows "Can't connect to Server API")."""
    return {"PREFECT_HOME": str(local.home), "PREFECT_API_URL": local.api_url, "PREFECT_UI_API_URL": local.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def repo_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Flows import the repository's packages, and prefect.yaml's pull step runs them from R1_REPO_DIR."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
    return {"R1_REPO_DIR": str(REPO_ROOT), "PYTHONPATH": path}


def exports(env: Mapping[str, str]) -> str:
    """`export` lines a shell evals (./r1 does)."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def profile(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a profiles/*.env file, read as ./r1 reads them (for benches and tests)."""
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if re.match(r"[A-Z0-9_]+=", line)]
    return {key: value.strip("'") for key, value in pairs}


def schedules_active(environ: Mapping[str, str]) -> bool:
    """A laptop must not redeploy by itself: schedules run only when asked for."""
    return environ.get("R1_SCHEDULES", "").strip().lower() == "on"


def registration_key(prefect_yaml: bytes, active: bool) -> str:
    """What the registered deployments were made from: a change re-registers them on a running server."""
    return hashlib.sha256(prefect_yaml + (b"\non" if active else b"\noff")).hexdigest()


def digests(environ: Mapping[str, str]) -> dict[str, str]:
    """The R1_* settings as digests: enough to see a change, nothing to leak from a state file."""
    return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in environ.items() if k.startswith("R1_")}


def job_env(worker: Mapping[str, str], environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(R1_* settings of the caller that the worker's environment lacks or differs in, sent as the run's
    ``env`` job variable; names left out because they look secret)."""
    changed = {k: v for k, v in environ.items() if k.startswith("R1_") and worker.get(k) != digests({k: v})[k]}
    secret = sorted(k for k in changed if any(word in k.upper() for word in SECRET_WORDS))
    return {k: v for k, v in changed.items() if k not in secret}, secret


def flow_run_url(ui_url: str, flow_run_id: object) -> str:
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def print_run_url(flow_run_id: object) -> None:
    """Tell a CLI user where the run is in the UI (stderr: stdout carries the command's own output); nothing
    with a temporary server, which is gone when the command ends."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url and settings.ui_url:
        print(f"run: {flow_run_url(settings.ui_url, flow_run_id)}", file=sys.stderr)


# Processes -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One `up` (or worker start) at a time per home: a second waits, then finds the first one's process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def alive(pid: int | None, marker: str) -> bool:
    """The process runs and is the one we started (its command line names ``marker``), not a reused pid."""
    try:
        return bool(pid) and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """Detached (own session, outlives the command), output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([PREFECT, *args], cwd=REPO_ROOT, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def ensure_server(local: Local, environ: Mapping[str, str]) -> None:
    """Start the server unless one answers; register the deployments when it was started here or when
    prefect.yaml (or R1_SCHEDULES) changed since they were registered."""
    with locked(local.file("server.lock")):
        started = False
        if not healthy(local.api_url):
            start_server(local, environ)
            started = True
        key = registration_key((REPO_ROOT / "prefect.yaml").read_bytes(), schedules_active(environ))
        if started or read_json(local.file("registered.json")).get("key") != key:
            register(local, environ)
            local.file("registered.json").write_text(json.dumps({"key": key}))


def start_server(local: Local, environ: Mapping[str, str], timeout_s: float = 240) -> None:
    log = local.file("server.log")
    print(f"starting the local Prefect server on {local.ui_url} (home {local.home}) ...", file=sys.stderr)
    proc = spawn(["server", "start", "--host", "127.0.0.1", "--port", str(local.port), "--analytics-off"],
                 {**environ, **client_env(local)}, log)
    local.file("server.json").write_text(json.dumps({"pid": proc.pid, "port": local.port}))
    deadline = time.monotonic() + timeout_s
    while not healthy(local.api_url):
        if proc.poll() is None and time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
        if proc.poll() is not None:
            raise HomeError(f"the Prefect server did not start (log: {log})")
        time.sleep(0.3)


def register(local: Local, environ: Mapping[str, str]) -> None:
    """Every deployment of prefect.yaml on the process pool (idempotent), schedules paused unless R1_SCHEDULES=on."""
    print("registering the deployments of prefect.yaml ...", file=sys.stderr)
    env = {**environ, **client_env(local), **repo_env(environ)}
    with httpx.Client(base_url=local.api_url, trust_env=False, timeout=30) as api:
        if api.get(f"/work_pools/{WORK_POOL}").status_code == 404:
            _prefect(["work-pool", "create", WORK_POOL, "--type", "process"], env, local.file("deploy.log"))
        _prefect(["--no-prompt", "deploy", "--all"], env, local.file("deploy.log"))
        set_schedules(api, schedules_active(environ))


def _prefect(args: list[str], env: Mapping[str, str], log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run([PREFECT, *args], cwd=REPO_ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise HomeError(f"`prefect {' '.join(args)}` failed (log: {log})")


def set_schedules(api: httpx.Client, active: bool) -> None:
    """Pause (or resume) every schedule of the project's deployments; pausing also drops their future runs."""
    found = api.post("/deployments/filter", json={"deployments": {"tags": {"all_": ["r1"]}}})
    found.raise_for_status()
    for deployment in found.json():
        for schedule in deployment["schedules"]:
            api.patch(f"/deployments/{deployment['id']}/schedules/{schedule['id']}",
                      json={"active": active}).raise_for_status()


def ensure_worker(local: Local, environ: Mapping[str, str]) -> dict[str, Any]:
    """The process worker of r1-process for this home, started with the caller's environment if none runs;
    returns its state (pid, digests of the R1_* settings it started with)."""
    with locked(local.file("worker.lock")):
        state = read_json(local.file("worker.json"))
        if alive(state.get("pid"), "worker"):
            return state
        log = local.file("worker.log")
        env = {"PREFECT_WORKER_QUERY_SECONDS": "2", **environ, **repo_env(environ)}
        print(f"starting a process worker for {WORK_POOL} (log {log}) ...", file=sys.stderr)
        proc = spawn(["worker", "start", "--pool", WORK_POOL, "--name", f"r1-local-{local.port}"], env, log)
        state = {"pid": proc.pid, "env": digests(env)}
        local.file("worker.json").write_text(json.dumps(state))
        return state


def stop_process(path: Path, marker: str, timeout_s: float = 20) -> bool:
    """SIGTERM the process group we started (a worker's flow runs with it), SIGKILL if it lingers."""
    pid = read_json(path).get("pid")
    path.unlink(missing_ok=True)
    if not alive(pid, marker):
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid, marker):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop(local: Local, environ: Mapping[str, str]) -> None:
    for name, path, marker in (("worker", local.file("worker.json"), "worker"),
                               ("server", local.file("server.json"), "server")):
        print(f"{name}: {'stopped' if stop_process(path, marker) else 'not running'}", file=sys.stderr)
    state_dir = environ.get("R1_EMULATOR_STATE_DIR") or str(REPO_ROOT / ".r1" / "emulator")
    subprocess.run([sys.executable, "-m", "emulator", "stop", "--state-dir", state_dir], cwd=REPO_ROOT, check=False)


# Deployment runs ------------------------------------------------------------------------------------
def run(local: Local, environ: Mapping[str, str], name: str, parameters: dict[str, Any]) -> int:
    """Run a deployment on the local worker as the UI's "Run" does, wait for it, say how it ended."""
    worker = ensure_worker(local, environ)
    env, secret = job_env(worker.get("env", {}), environ)
    if secret:
        print(f"note: the worker runs with other {', '.join(secret)}; `./r1 stop` restarts it", file=sys.stderr)
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings

    flow_run = run_deployment(name, parameters=parameters, job_variables={"env": env} if env else None, timeout=0)
    url = flow_run_url(get_current_settings().ui_url or local.ui_url, flow_run.id)
    print(f"{name}: flow run {flow_run.name} {url}", file=sys.stderr)
    with get_client(sync_client=True) as client:
        while not (flow_run := client.read_flow_run(flow_run.id)).state.is_final():
            time.sleep(2)
    print(f"{name}: {flow_run.state.name}" + (f" ({flow_run.state.message})" if flow_run.state.message else ""),
          file=sys.stderr)
    if name.startswith("rollout/"):
        _print_rollout(environ, str(flow_run.id)[:8])
    print(url)
    return 0 if flow_run.state.is_completed() else 1


def _print_rollout(environ: Mapping[str, str], run_id: str) -> None:
    """The rollout's outcome and report folder, from the report the run wrote (its result is not persisted)."""
    from tasks.rollout.report import recorded_outcome

    reports = Path(environ.get("R1_REPORTS_DIR") or "reports")
    found = recorded_outcome(reports if reports.is_absolute() else REPO_ROOT / reports, run_id)
    if found:
        print(f"rollout {found['outcome']}: {found['reason']}\nreport: {found['report_dir']}", file=sys.stderr)


def status(local: Local, environ: Mapping[str, str]) -> str:
    if own := user_api_url(environ, local):
        return f"server: your own, {own} (nothing started here)"
    server = read_json(local.file("server.json")).get("pid")
    worker = read_json(local.file("worker.json")).get("pid")
    return "\n".join([
        f"server: {'up' if healthy(local.api_url) else 'down'} {local.ui_url} pid "
        f"{server if alive(server, 'server') else '-'} (home {local.home})",
        f"worker: {'up pid ' + str(worker) if alive(worker, 'worker') else 'down'} (pool {WORK_POOL})"])


def _param(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.prefect_home", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "status", "run", "stop"])
    parser.add_argument("deployment", nargs="?", help="run: FLOW/DEPLOYMENT, e.g. rollout/rollout")
    parser.add_argument("--param", action="append", type=_param, default=[], help="run: NAME=JSON (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "run" and not args.deployment:
        parser.error("run needs FLOW/DEPLOYMENT")
    local = Local.from_env(os.environ)
    own = user_api_url(os.environ, local)
    try:
        if args.command == "status":
            print(status(local, os.environ))
        elif args.command == "stop":
            stop(local, os.environ)
        elif not own:
            ensure_server(local, os.environ)
            os.environ.update(client_env(local))
            print(exports(client_env(local)) if args.command == "up" else "", end="")
        return run(local, dict(os.environ), args.deployment, dict(args.param)) if args.command == "run" else 0
    except HomeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
