"""Start, find and stop an emulator process for a state dir.

A running emulator holds an exclusive flock on ``emulator.lock`` (which also records its pid), so
"is one running?" has an exact answer even after a SIGKILL left a stale connection.json behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from emulator.layout import StateDir

REPO_ROOT = Path(__file__).resolve().parent.parent


class EmulatorError(RuntimeError):
    """The emulator could not be started or stopped; the message says why."""


@contextlib.contextmanager
def hold_lock(state: StateDir) -> Iterator[int]:
    fd = os.open(state.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmulatorError(f"an emulator is already running on {state.root}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield fd
    finally:
        os.close(fd)


def lock_lost(state: StateDir, fd: int) -> bool:
    """True once the state dir's lock file is gone or replaced (e.g. someone deleted the state dir):
    the emulator then stops rather than run on as an orphan nobody can find."""
    try:
        return os.stat(state.lock).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return True


def running_pid(state: StateDir) -> int | None:
    """The pid of the emulator holding the state dir's lock, or None if none is running."""
    if not state.lock.exists():
        return None
    fd = os.open(state.lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def connection(state: StateDir) -> dict | None:
    """connection.json of the emulator running now, or None."""
    pid = running_pid(state)
    if pid is None:
        return None
    try:
        conn = json.loads(state.connection.read_text())
    except (OSError, ValueError):
        return None
    return conn if conn.get("pid") == pid else None


def start_detached(state_dir: Path, args: list[str], timeout: float = 60.0) -> dict:
    """Start ``python -m emulator`` in the background; return its connection once it is ready."""
    state = StateDir(state_dir.resolve())
    state.root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with state.log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--state-dir", str(state.root), *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = connection(state)
        if conn and conn.get("pid") == proc.pid:
            return conn
        if proc.poll() is not None:
            tail = state.log.read_text(errors="replace").splitlines()[-15:]
            raise EmulatorError("the emulator exited during start-up:\n" + "\n".join(tail))
        time.sleep(0.05)
    proc.kill()
    raise EmulatorError(f"the emulator did not become ready within {timeout:g} s (log: {state.log})")


def stop(state_dir: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the running emulator and wait until it has stopped its instances; False if none ran."""
    state = StateDir(state_dir.resolve())
    pid = running_pid(state)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(state) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # its instances' watchdogs take them down with it
            break
        time.sleep(0.05)
    return True
