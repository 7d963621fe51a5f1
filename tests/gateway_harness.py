"""Serve the scoring gateway for tests and the bench: a small in-memory ScoringDirectory and a
real uvicorn server (optionally HTTPS with the emulator's throwaway CA) in a background thread."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import uvicorn

from emulator.gateway import ScoringGateway
from emulator.scoring_directory import AuthMode, DeploymentView, EndpointView


def deployment(name: str, *instances: str, mcr: int = 8, timeout_ms: int = 10_000,
               count: int | None = None, scoring_path: str = "/") -> DeploymentView:
    return DeploymentView(name=name, max_concurrent_requests_per_instance=mcr, request_timeout_ms=timeout_ms,
                          instance_count=count if count is not None else max(1, len(instances)),
                          ready_instances=tuple(instances), scoring_path=scoring_path)


@dataclass
class StaticDirectory:
    """Endpoints plus the credentials valid for each, with expiry (keys never expire)."""

    endpoints: dict[str, EndpointView] = field(default_factory=dict)
    credentials: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, name: str, *deployments: DeploymentView, traffic: dict[str, int] | None = None,
            mirror: dict[str, int] | None = None, auth_mode: AuthMode = "Key", key: str | None = None) -> str:
        self.endpoints[name] = EndpointView(name=name, auth_mode=auth_mode, traffic=traffic or {},
                                            mirror_traffic=mirror or {},
                                            deployments={d.name: d for d in deployments})
        key = key or f"key-{name}"
        self.credentials[name] = {key: math.inf}
        return key

    def set_traffic(self, name: str, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> None:
        self.endpoints[name] = replace(self.endpoints[name], traffic=traffic, mirror_traffic=mirror or {})

    def grant(self, name: str, bearer: str, expires_at: float = math.inf) -> None:
        self.credentials[name][bearer] = expires_at

    def revoke(self, name: str, bearer: str) -> None:
        del self.credentials[name][bearer]

    def endpoint(self, name: str) -> EndpointView | None:
        return self.endpoints.get(name)

    def authorize(self, endpoint: str, bearer: str) -> bool:
        expires_at = self.credentials.get(endpoint, {}).get(bearer)
        return expires_at is not None and time.time() < expires_at


@contextmanager
def serve(app: ScoringGateway, certfile: Path | None = None, keyfile: Path | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn on a loopback port; yields its base URL (https when a cert is given)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response pays a 40 ms Nagle / delayed-ACK stall.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            ssl_certfile=certfile, ssl_keyfile=keyfile, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
