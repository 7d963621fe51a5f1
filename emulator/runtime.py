"""Instances: child processes running an engine per deployment, probed like Azure probes containers.

Each instance runs in its own process group under a tiny shell watchdog that holds the read end of
a pipe whose write end only the emulator holds: when the emulator dies in any way (even SIGKILL),
the pipe closes and the watchdog kills the whole group, grandchildren included.
Readiness gates provisioning and traffic; liveness failures and crashes restart the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from emulator import images

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
_WATCHDOG = 'fd=$1; shift; (cat "/dev/fd/$fd" >/dev/null 2>&1; kill -KILL 0) & exec "$@"'
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
_STOP_GRACE_SECONDS = 5.0
_LOG_MAX_BYTES = 20 * 2**20  # at an instance (re)start a longer log keeps only its last _LOG_KEEP_BYTES
_LOG_KEEP_BYTES = 2 * 2**20
_TICK = 0.05


@dataclass(frozen=True)
class ProbeSpec:
    """Azure's probe settings (seconds) plus the route from the environment's inference config."""

    path: str = "/health"
    initial_delay: float = 10
    period: float = 10
    timeout: float = 2
    success_threshold: int = 1
    failure_threshold: int = 30

    @property
    def window(self) -> float:
        return self.initial_delay + self.period * self.failure_threshold + self.timeout


@dataclass(frozen=True)
class RunSpec:
    """What the runtime needs to know about one deployment."""

    deployment_id: str
    image: str
    env: tuple[tuple[str, str], ...]
    capacity: int
    readiness: ProbeSpec
    liveness: ProbeSpec
    fail_message: str | None = None  # injected fault: provisioning fails with this message
    start_delay: float = 0.0  # injected fault or --realistic pacing

    @property
    def shape(self) -> tuple:
        """Changing any of these replaces the instances; changing only the capacity scales."""
        return (self.image, self.env, self.readiness, self.liveness)


@dataclass(frozen=True)
class Outcome:
    state: str  # Succeeded | Failed
    code: str = ""
    message: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trim_log(path: Path, max_bytes: int = _LOG_MAX_BYTES, keep_bytes: int = _LOG_KEEP_BYTES) -> None:
    """Bound a container log that grows across restarts: keep its last ``keep_bytes``."""
    if not path.exists() or path.stat().st_size <= max_bytes:
        return
    with path.open("rb") as f:
        f.seek(-keep_bytes, os.SEEK_END)
        tail = f.read()
    path.write_bytes(tail[tail.find(b"\n") + 1:])


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file without reading all of it."""
    if not path.exists() or lines <= 0:
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size, block, data = f.tell(), 65536, b""
        while size > 0 and data.count(b"\n") <= lines:
            step = min(block, size)
            size -= step
            f.seek(size)
            data = f.read(step) + data
    return data.decode(errors="replace").splitlines()[-lines:]


class Instance:
    def __init__(self, spec: RunSpec, index: int, log_path: Path, watch_fd: int,
                 http: httpx.AsyncClient, on_change: Callable[[], None]):
        self.spec, self.index, self.log_path = spec, index, log_path
        self._watch_fd, self._http, self._on_change = watch_fd, http, on_change
        self.port = 0
        self.ready = False
        self.fatal: str | None = None
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, command: images.InstanceCommand) -> None:
        self._task = asyncio.create_task(self._supervise(command))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self._on_change()

    async def _supervise(self, command: images.InstanceCommand) -> None:
        try:
            while True:
                try:
                    await self._run_once(command)
                except Exception as err:  # the engine cannot start at all: no point restarting
                    self.fatal = str(err)
                    self._write_log(f"[emulator] instance cannot start: {err}")
                    return
                self.restarts += 1
                await asyncio.sleep(min(10.0, 0.25 * 2 ** min(self.restarts, 6)))
        finally:
            self._set_ready(False)
            await self._kill()

    def _write_log(self, line: str) -> None:
        with self.log_path.open("a") as f:
            f.write(line + "\n")

    async def _run_once(self, command: images.InstanceCommand) -> None:
        self.port = free_port()
        deployment_env = dict(self.spec.env)
        argv, extra_env = command(self.port, deployment_env)
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.update(deployment_env)
        env.update(extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        trim_log(self.log_path)
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", _WATCHDOG, "sh", str(self._watch_fd), *argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=env, cwd=REPO_ROOT, start_new_session=True, pass_fds=(self._watch_fd,),
            )
        exited = asyncio.create_task(self._proc.wait())
        readiness = asyncio.create_task(self._readiness())
        liveness = asyncio.create_task(self._liveness())
        try:
            await asyncio.wait({exited, liveness}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (readiness, liveness, exited):
                task.cancel()
            self._set_ready(False)
            await self._kill()
        if liveness.done() and not liveness.cancelled():
            self._write_log(f"[emulator] liveness probe failed {self.spec.liveness.failure_threshold} times: restarting")
        else:
            self._write_log(f"[emulator] instance exited with code {self._proc.returncode}: restarting")

    async def _probe(self, probe: ProbeSpec) -> bool:
        try:
            response = await self._http.get(self.url + probe.path, timeout=probe.timeout)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400

    async def _readiness(self) -> None:
        probe = self.spec.readiness
        await asyncio.sleep(probe.initial_delay)
        successes = failures = 0
        while True:
            if await self._probe(probe):
                successes, failures = successes + 1, 0
                if successes >= probe.success_threshold:
                    self._set_ready(True)
            else:
                successes, failures = 0, failures + 1
                if failures >= probe.failure_threshold:
                    self._set_ready(False)
            await asyncio.sleep(probe.period)

    async def _liveness(self) -> None:
        """Returns after ``failure_threshold`` consecutive failures, which restarts the instance."""
        probe = self.spec.liveness
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while failures < probe.failure_threshold:
            failures = 0 if await self._probe(probe) else failures + 1
            if failures < probe.failure_threshold:
                await asyncio.sleep(probe.period)

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), _STOP_GRACE_SECONDS)
        except asyncio.TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):  # the watchdog and any grandchildren
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


class Runner:
    """The instances of one deployment and its current provisioning."""

    def __init__(self, runtime: Runtime, spec: RunSpec):
        self.runtime = runtime
        self.spec = spec
        self.instances: list[Instance] = []
        self.failed = False
        self._provisioning: asyncio.Task | None = None

    def apply(self, spec: RunSpec) -> bool:
        """Reconcile to ``spec``; True if a provisioning outcome will be reported."""
        old, self.spec = self.spec, spec
        busy = self._provisioning is not None and not self._provisioning.done()
        if busy:
            self._provisioning.cancel()
        scale_only = not busy and not self.failed and bool(self.instances) and old.shape == spec.shape
        if scale_only and spec.capacity <= len(self.instances):
            extra, self.instances = self.instances[spec.capacity:], self.instances[: spec.capacity]
            self.runtime.background(*(i.stop() for i in extra))
            return False
        self._provisioning = asyncio.create_task(self._provision(replace=not scale_only))
        return True

    async def stop(self) -> None:
        if self._provisioning:
            self._provisioning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._provisioning
        instances, self.instances = self.instances, []
        await asyncio.gather(*(i.stop() for i in instances))

    async def _provision(self, replace: bool) -> None:
        """Start the new instances next to the serving ones (surge) and switch once all are ready,
        so an update of a deployment with traffic has no gap; on failure nothing of it keeps running."""
        spec = self.spec
        self.failed = False
        keep = [] if replace else list(self.instances)
        new: list[Instance] = []
        try:
            outcome = await self._start_and_wait(spec, new, first_index=len(keep))
        except asyncio.CancelledError:  # superseded by a newer apply, or stopped
            await asyncio.gather(*(i.stop() for i in new))
            raise
        retired = [i for i in self.instances if i not in keep]
        if outcome.state == "Succeeded":
            self.instances = keep + new
        else:
            self.failed = True
            retired += keep + new
            self.instances = []
        await asyncio.gather(*(i.stop() for i in retired))
        self.runtime.report(spec.deployment_id, outcome)

    async def _start_and_wait(self, spec: RunSpec, new: list[Instance], first_index: int) -> Outcome:
        """Start instances ``first_index..capacity-1`` into ``new`` and wait for their readiness."""
        await asyncio.sleep(spec.start_delay)
        if spec.fail_message:
            return Outcome("Failed", "DeploymentFailed", spec.fail_message)
        try:
            command = images.instance_command(spec.image, self.runtime.registry)
        except images.ImageError as err:
            self.runtime.note(spec.deployment_id, f"[emulator] {err}")  # what the deployment's logs show
            return Outcome("Failed", "ImagePullFailure", str(err))
        new.extend(self.runtime.new_instance(spec, i) for i in range(first_index, spec.capacity))
        for instance in new:
            instance.start(command)
        deadline = asyncio.get_running_loop().time() + spec.readiness.window
        while True:
            fatal = next((i.fatal for i in new if i.fatal), None)
            if fatal:
                return Outcome("Failed", "ResourceNotReady", f"User container failed to start: {fatal}")
            if all(i.ready for i in new):
                return Outcome("Succeeded")
            if asyncio.get_running_loop().time() > deadline:
                waiting = [i.index for i in new if not i.ready]
                return Outcome(
                    "Failed", "ResourceNotReady",
                    f"User container has crashed or terminated: the readiness probe "
                    f"({spec.readiness.path}) of instance(s) {waiting} did not pass within "
                    f"{spec.readiness.window:g} s (initial delay + period x failure threshold). "
                    "See the deployment logs.",
                )
            await asyncio.sleep(_TICK)


class Runtime:
    def __init__(self, logs_root: Path, on_outcome: Callable[[str, Outcome], None],
                 on_change: Callable[[], None], registry: images.HeldImages):
        self.logs_root = logs_root
        self.registry = registry  # the emulator's registry: images it holds are pulled from it
        self._on_outcome = on_outcome
        self.on_change = on_change
        self._runners: dict[str, Runner] = {}
        self._background: set[asyncio.Task] = set()
        self._watch_read, self._watch_write = os.pipe()  # both close-on-exec; the read end is passed
        self._http = httpx.AsyncClient(trust_env=False)

    def log_dir(self, deployment_id: str) -> Path:
        return self.logs_root / hashlib.sha256(deployment_id.lower().encode()).hexdigest()[:16]

    def new_instance(self, spec: RunSpec, index: int) -> Instance:
        path = self.log_dir(spec.deployment_id) / f"instance-{index}.log"
        return Instance(spec, index, path, self._watch_read, self._http, self.on_change)

    def note(self, deployment_id: str, line: str) -> None:
        """A line in the deployment's logs before any instance runs (an image that cannot be pulled)."""
        path = self.log_dir(deployment_id) / "instance-0.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(line + "\n")

    def report(self, deployment_id: str, outcome: Outcome) -> None:
        self._on_outcome(deployment_id, outcome)

    def background(self, *coros) -> None:
        for coro in coros:
            task = asyncio.create_task(coro)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def apply(self, spec: RunSpec) -> bool:
        key = spec.deployment_id.lower()
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = Runner(self, spec)
        return runner.apply(spec)

    def remove(self, deployment_id: str) -> None:
        """Stop a deployment's instances (in the background) and forget its logs."""
        runner = self._runners.pop(deployment_id.lower(), None)
        log_dir = self.log_dir(deployment_id)

        async def stop_and_clean() -> None:
            if runner:
                await runner.stop()
            if deployment_id.lower() in self._runners:  # re-created meanwhile: its logs are live
                return
            for f in log_dir.glob("*.log"):
                f.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                log_dir.rmdir()

        self.background(stop_and_clean())
        self.on_change()

    def ready_urls(self, deployment_id: str) -> tuple[str, ...]:
        runner = self._runners.get(deployment_id.lower())
        return tuple(i.url for i in runner.instances if i.ready) if runner else ()

    def instance_info(self, deployment_id: str) -> list[dict]:
        runner = self._runners.get(deployment_id.lower())
        if not runner:
            return []
        return [{"index": i.index, "url": i.url, "ready": i.ready, "restarts": i.restarts}
                for i in runner.instances]

    def logs(self, deployment_id: str, tail: int) -> str:
        paths = sorted(self.log_dir(deployment_id).glob("instance-*.log"))
        if len(paths) == 1:
            return "\n".join(tail_lines(paths[0], tail))
        parts = []
        for path in paths:
            parts.append(f"--- {path.stem} ---")
            parts.extend(tail_lines(path, tail))
        return "\n".join(parts)

    async def close(self) -> None:
        runners, self._runners = list(self._runners.values()), {}
        await asyncio.gather(*(r.stop() for r in runners), *self._background, return_exceptions=True)
        await self._http.aclose()
        os.close(self._watch_write)
        os.close(self._watch_read)
        log.info("all instances stopped")

