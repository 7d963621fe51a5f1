"""Benchmark the scoring gateway: requests/s and the latency it adds over calling the fake engine
directly, at concurrency 1, 16 and 64, streaming and not, over HTTPS as the emulator serves it.

    .venv/bin/python bench/gateway.py [--seconds 2] [--rate 500]

Two tables: closed loop (throughput; at concurrency N the latency is N / throughput, so it
measures saturation, not overhead) and paced at --rate (the added latency a caller sees when the
gateway is not saturated).

The engine, the gateway (uvicorn + TLS) and this load generator run as three processes. The load
generator speaks raw HTTP/1.1 over asyncio streams so that it is not the bottleneck it measures.
"cpu ms/req" is the gateway process's own CPU time per request (warm-up included): on a shared
machine it is the steadier figure; 1000 / it is the rate one dedicated core could sustain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from emulator.certs import ensure_certificates  # noqa: E402
from emulator.layout import StateDir  # noqa: E402
from tests.fake_engine_process import fake_engine, free_port, wait_listening  # noqa: E402

KEY = "bench-key"
CHAT = {"messages": [{"role": "user", "content": "Which is better, summer or winter?"}], "max_tokens": 16}


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a canned request and reads the whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str, context: ssl.SSLContext | None) -> Connection:
        parts = urlsplit(url)
        return cls(*await asyncio.open_connection(parts.hostname, parts.port, ssl=context))

    async def exchange(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    return status
        length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def canned_request(url: str, stream: bool) -> bytes:
    parts = urlsplit(url)
    body = json.dumps({**CHAT, "stream": stream}).encode()
    return (f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\nauthorization: Bearer {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


async def load(url: str, stream: bool, concurrency: int, seconds: float, context: ssl.SSLContext | None,
               rate: float | None = None) -> tuple[float, list[float], int]:
    """(requests/s, latencies in seconds, non-200 answers) for ``seconds`` of load on ``concurrency``
    connections: closed loop (each sends again at once), or paced at ``rate`` requests/s in total, with
    latency counted from the scheduled send time (so queueing behind a saturated gateway shows)."""
    raw = canned_request(url, stream)
    connections = [await Connection.open(url, context) for _ in range(concurrency)]
    for connection in connections:  # warm up (TLS session, pools)
        await connection.exchange(raw)
    latencies: list[float] = []
    failures = 0
    began = time.perf_counter()
    deadline = began + seconds

    async def worker(index: int, connection: Connection) -> None:
        nonlocal failures
        sent = 0
        while True:
            due = began + (sent * concurrency + index) / rate if rate else time.perf_counter()
            if due >= deadline:
                return
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            if await connection.exchange(raw) != 200:
                failures += 1
            latencies.append(time.perf_counter() - due)
            sent += 1

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - began
    for connection in connections:
        connection.close()
    return len(latencies) / elapsed, latencies, failures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: the gateway's cost per request, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else 0.0


def serve_gateway(port: int, engine_url: str, certfile: str, keyfile: str) -> None:
    """The gateway process: one endpoint ``bench`` with one deployment on the engine."""
    import uvicorn

    from emulator.gateway import create_gateway_app
    from tests.gateway_harness import StaticDirectory, deployment

    directory = StaticDirectory()
    directory.add("bench", deployment("blue", engine_url, mcr=64), traffic={"blue": 100}, key=KEY)
    uvicorn.run(create_gateway_app(directory), host="127.0.0.1", port=port, ssl_certfile=certfile,
                ssl_keyfile=keyfile, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="load per cell (default 2)")
    parser.add_argument("--rate", type=float, default=500.0, help="offered rate of the paced runs (default 500/s)")
    parser.add_argument("--serve-gateway", nargs=4, metavar=("PORT", "ENGINE", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        port, engine, cert, key = args.serve_gateway
        serve_gateway(int(port), engine, cert, key)
        return
    state = StateDir(Path(tempfile.mkdtemp(prefix="r1-gateway-bench-")))
    ensure_certificates(state)
    context = ssl.create_default_context(cafile=str(state.ca_cert))
    with fake_engine({"FAKE_ENGINE_REASONING_TOKENS": "8", "FAKE_ENGINE_ANSWER_TOKENS": "7"}) as engine:
        port = free_port()
        gateway = subprocess.Popen(
            [sys.executable, __file__, "--serve-gateway", str(port), engine.url, str(state.server_cert),
             str(state.server_key)], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        try:
            wait_listening(port, gateway)
            through = f"https://127.0.0.1:{port}/endpoints/bench/v1/chat/completions"
            direct = f"{engine.url}/v1/chat/completions"
            for rate in (None, args.rate):
                print("closed loop: as fast as it goes" if rate is None else
                      f"paced: {rate:.0f} requests/s offered, latency from the scheduled send time")
                print(f"{'mode':<10}{'conc':>5} | {'direct rps':>10} {'p50 ms':>7} {'p99 ms':>7} | "
                      f"{'gateway rps':>11} {'p50 ms':>7} {'p99 ms':>7} | {'added p50':>9} {'added p99':>9} "
                      f"{'cpu ms/req':>10} {'errors':>6}")
                for stream in (False, True):
                    for concurrency in (1, 16, 64):
                        if rate and concurrency == 1:
                            continue  # one connection cannot be offered 500/s of ~1 ms requests
                        d_rps, d_lat, d_err = asyncio.run(load(direct, stream, concurrency, args.seconds, None, rate))
                        cpu_before = cpu_seconds(gateway.pid)
                        g_rps, g_lat, g_err = asyncio.run(
                            load(through, stream, concurrency, args.seconds, context, rate))
                        cpu_ms = (cpu_seconds(gateway.pid) - cpu_before) / (len(g_lat) + concurrency) * 1000
                        d50, d99, g50, g99 = (percentile(d_lat, 50), percentile(d_lat, 99),
                                              percentile(g_lat, 50), percentile(g_lat, 99))
                        print(f"{'stream' if stream else 'whole':<10}{concurrency:>5} | {d_rps:>10.0f} "
                              f"{d50:>7.2f} {d99:>7.2f} | {g_rps:>11.0f} {g50:>7.2f} {g99:>7.2f} | "
                              f"{g50 - d50:>9.2f} {g99 - d99:>9.2f} {cpu_ms:>10.2f} {d_err + g_err:>6}", flush=True)
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)


if __name__ == "__main__":
    main()
