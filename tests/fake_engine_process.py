"""Start real fake-engine processes for tests (shared by the engine and gateway tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from emulator.engines.fake import REPO_ROOT, instance_command
from tests.ports import free_port


@dataclass
class EngineProcess:
    url: str
    process: subprocess.Popen[bytes]

    def metric(self, name: str) -> float:
        """The first sample of a metric in the engine's /metrics (labels ignored)."""
        return metric_value(httpx.get(f"{self.url}/metrics").text, name)

    def counter(self, path: str | None = None) -> int:
        """Requests the engine has seen (on ``path``, or on any path but /metrics and /health)."""
        total = 0
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith("fake_engine_http_requests_total{"):
                seen_path = line.split('path="', 1)[1].split('"', 1)[0]
                if (path is None and seen_path not in ("/metrics", "/health")) or seen_path == path:
                    total += int(float(line.rsplit(" ", 1)[1]))
        return total


def metric_value(text: str, name: str) -> float:
    """The first sample of ``name`` in Prometheus text (labels ignored)."""
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port} after 30 s")


def stop_process(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def fake_engine(knobs: Mapping[str, str] | None = None, port: int | None = None) -> Iterator[EngineProcess]:
    """A fake engine process on a (free) loopback port, configured like a deployment's environment."""
    port = port or free_port()
    deployment_env = {"FAKE_ENGINE_ACCESS_LOG": "0", **(knobs or {})}
    argv, extra = instance_command(port, deployment_env)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_ENGINE_")}
    process = subprocess.Popen(argv, env={**env, **deployment_env, **extra}, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        yield EngineProcess(f"http://127.0.0.1:{port}", process)
    finally:
        stop_process(process, timeout_s=10)
