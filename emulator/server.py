"""Run the emulator: the ARM, scoring gateway and blob listeners, all HTTPS on loopback.

One asyncio loop holds everything (SQLite, the runtime, the registry's runs, the three uvicorn servers);
SIGTERM and SIGINT stop the servers, then every run and instance, then remove connection.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from emulator import rules
from emulator.admin import admin_routes
from emulator.arm import ControlPlane
from emulator.autoscaler import Autoscaler
from emulator.blobs import BlobService
from emulator.certs import ensure_certificates
from emulator.directory import Directory
from emulator.integrity import check_database, quarantine_damaged
from emulator.entra import entra_routes
from emulator.faults import FaultInjector, Faults
from emulator.http_limits import HeaderTimeoutProtocol
from emulator.layout import StateDir, write_json_atomic
from emulator.process import hold_lock, lock_lost
from emulator.store import Store
from emulator.tokens import Issuer

log = logging.getLogger("emulator")
FAULTS_ENV = "R1_EMULATOR_FAULTS"
QUOTA_ENV = "R1_EMULATOR_GPU_QUOTA_CORES"
_LOCK_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Options:
    state_dir: Path
    port: int = 0
    gateway_port: int = 0
    location: str = "swedencentral"
    realistic: bool = False
    gpu_quota_cores: int = rules.DEFAULT_GPU_QUOTA_CORES
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "rg-r1"
    workspace: str = "ws-r1"
    autoscale_interval: float = 15.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the emulator (three servers share one loop)."""

    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()


def _bind(port: int) -> socket.socket:
    # With IPPROTO_TCP asyncio sets TCP_NODELAY on accepted sockets; without it every answer
    # waits ~40 ms for the peer's delayed ACK (measured: 28-34 ms per request through the gateway).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def _bind_preferring(port: int, previous: int | None) -> socket.socket:
    """Bind ``port``; with 0, try the port of the previous run first so URLs survive a restart."""
    if port == 0 and previous:
        with contextlib.suppress(OSError):
            return _bind(previous)
    return _bind(port)


def _gateway_app(directory: Directory, measured=None):
    try:
        from emulator.gateway import create_gateway_app
    except ImportError as err:
        log.warning("scoring gateway unavailable (%s): answering 503", err)

        async def unavailable(request):
            return JSONResponse({"error": {"code": "ServiceUnavailable", "message": "No scoring gateway."}}, 503)

        return Starlette(routes=[Route("/{path:path}", unavailable, methods=["GET", "POST", "PUT", "DELETE"])])
    return create_gateway_app(directory, measured=measured)


_LISTENERS = ("arm", "gateway", "blob")


def _previous_ports(state: StateDir) -> dict[str, int]:
    """The listeners' ports of the previous run (listeners.json); any unreadable entry is left out."""
    try:
        ports = json.loads(state.listeners.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(ports, dict):
        return {}
    return {name: ports[name] for name in _LISTENERS if type(ports.get(name)) is int}


def _uvicorn(app, state: StateDir) -> _Server:
    return _Server(uvicorn.Config(
        app, ssl_certfile=str(state.server_cert), ssl_keyfile=str(state.server_key),
        log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30, http=HeaderTimeoutProtocol,
        timeout_graceful_shutdown=1,
    ))


async def serve(opts: Options) -> None:
    state = StateDir(opts.state_dir.resolve())
    state.root.mkdir(parents=True, exist_ok=True)
    with hold_lock(state) as lock_fd:
        previous = _previous_ports(state)
        state.connection.unlink(missing_ok=True)
        ensure_certificates(state)
        socks = {"arm": _bind_preferring(opts.port, previous.get("arm")),
                 "gateway": _bind_preferring(opts.gateway_port, previous.get("gateway")),
                 "blob": _bind_preferring(0, previous.get("blob"))}
        ports = {name: sock.getsockname()[1] for name, sock in socks.items()}
        arm_url = f"https://127.0.0.1:{ports['arm']}"
        write_json_atomic(state.listeners, ports)
        check_database(state)  # refuses to start on a lost or unreadable database
        store = Store(state.database)
        quarantine_damaged(store)
        faults = FaultInjector(Faults.model_validate_json(os.environ.get(FAULTS_ENV) or "{}"))
        blobs = BlobService(state)
        blobs.base_url = f"https://127.0.0.1:{ports['blob']}"
        control = ControlPlane(state, store, Issuer(state, arm_url), faults, blobs, opts.location,
                               opts.gpu_quota_cores, opts.realistic,
                               scope=(opts.subscription_id, opts.resource_group, opts.workspace))
        control.scoring_base = f"https://127.0.0.1:{ports['gateway']}"
        arm_app = Starlette(routes=[
            *admin_routes(control),
            *entra_routes(control.issuer),  # the Entra ID tenant MSAL signs in to (emulator/entra.py)
            *control.registry.upstream.routes(),  # the upstream's registry API (emulator/upstream.py)
            Route("/{path:path}", control.dispatch, methods=["GET", "PUT", "POST", "PATCH", "DELETE"]),
        ])
        servers = [(_uvicorn(arm_app, state), socks["arm"]),
                   (_uvicorn(_gateway_app(Directory(control), control.measured), state), socks["gateway"]),
                   (_uvicorn(Starlette(routes=blobs.routes()), state), socks["blob"])]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
        autoscaler = asyncio.create_task(Autoscaler(control, opts.autoscale_interval).run())
        try:
            while not all(server.started for server, _ in servers):
                if any(t.done() for t in tasks):
                    raise RuntimeError("a listener failed to start; see the log above")
                await asyncio.sleep(0.02)
            control.restore()
            write_json_atomic(state.connection, {
                "arm_url": arm_url, "ca_cert": str(state.ca_cert),
                "subscription_id": opts.subscription_id, "resource_group": opts.resource_group,
                "workspace": opts.workspace, "location": opts.location,
                "scoring_base": control.scoring_base, "pid": os.getpid(),
                # the tenant and the default principal (its secret: secrets/client_secret, never here)
                "tenant_id": control.issuer.tenant.tenant_id,
                "client_id": control.issuer.tenant.default_principal.client_id,
            })
            log.info("emulator ready: ARM %s, scoring %s, blobs %s, state %s", arm_url, control.scoring_base,
                     blobs.base_url, state.root)
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), _LOCK_CHECK_SECONDS)
                if lock_lost(state, lock_fd):
                    log.warning("the state dir %s was removed or replaced: stopping", state.root)
                    break
            log.info("stopping")
        finally:
            state.connection.unlink(missing_ok=True)
            autoscaler.cancel()
            for server, _ in servers:
                server.should_exit = True
            await asyncio.gather(*tasks, autoscaler, control.registry.close(), control.runtime.close(),
                                 return_exceptions=True)
            store.close()
            log.info("stopped")
