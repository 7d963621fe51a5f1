"""Test support for the load generator: synthetic records, and a scripted SSE server with known timings.

The server answers OpenAI-style requests on 127.0.0.1.

Each request is answered by a script: HTTP status, headers and a list of writes, each write one
or more SSE events sent together after a delay. With a ``StepClock`` the delay advances a virtual
clock that the client under test reads, and the server waits for the client to read it before the
next write, so every client timestamp is exact. Without one, the server really sleeps and records
the ``perf_counter`` time of each write (same process, same clock as the client's default).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tasks.loadtest.record import RequestRecord


def make_record(index: int = 0, ttft_ms: float | None = 100.0, tpot_ms: float | None = 10.0, tokens: int = 11,
                error: str | None = None, sent_s: float | None = None, intended_s: float | None = None,
                deployment: str | None = "blue", warmup: bool = False) -> RequestRecord:
    """A finished request with the given TTFT and TPOT (ms); its answer takes ``tokens`` tokens."""
    sent = float(index) if sent_s is None else sent_s
    rec = RequestRecord(index=index, intended_s=sent if intended_s is None else intended_s, sent_s=sent,
                        warmup=warmup, deployment=deployment, status=200 if error is None else 500, error=error)
    if error is None and ttft_ms is not None:
        rec.first_token_s = rec.first_answer_s = sent + ttft_ms / 1000
        rec.last_token_s = rec.first_token_s + (tpot_ms or 0) / 1000 * (tokens - 1)
        rec.completion_tokens, rec.prompt_tokens = tokens, 5
        rec.answer_chunks = rec.choice_events = tokens
        rec.chunk_times_s = [rec.first_token_s + (tpot_ms or 0) / 1000 * i for i in range(tokens)]
    rec.end_s = (rec.last_token_s or sent + 0.05) + 0.001
    return rec


class StepClock:
    """A virtual clock: the server advances it; each client read is signalled back to the server."""

    def __init__(self, start: float = 100.0):
        self.t = start
        self.read = threading.Event()

    def __call__(self) -> float:
        self.read.set()
        return self.t

    def advance(self, dt: float) -> None:
        self.read.clear()
        self.t += dt

    async def wait_read(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.read.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the client never read the clock")
            await asyncio.sleep(0.0005)


@dataclass
class Write:
    delay_s: float
    events: list[Any]  # dicts become JSON; strings are sent verbatim as data (e.g. "[DONE]")


@dataclass
class Script:
    writes: list[Write] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    end_delay_s: float = 0.0  # between the last write and closing the stream
    body: bytes = b""  # for non-200 answers


@dataclass
class Served:
    body: dict
    headers: dict[str, str]
    received_s: float
    write_s: list[float] = field(default_factory=list)
    closed_s: float | None = None


def chat_chunk(content: str | None = None, reasoning: str | None = None, finish: str | None = None) -> dict:
    delta: dict = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning"] = reasoning
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int, reasoning: int | None = None) -> dict:
    usage: dict = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return {"object": "chat.completion.chunk", "choices": [], "usage": usage}


def sse(event: Any) -> bytes:
    return b"data: " + (event if isinstance(event, str) else json.dumps(event)).encode() + b"\n\n"


class SseServer:
    """Runs the app in a thread; ``script`` decides each answer; ``served`` records what happened."""

    def __init__(self, script: Callable[[int, dict], Script], clock: StepClock | None = None,
                 tls: tuple[str, str] | None = None):
        self.script, self.clock, self.scheme = script, clock, "https" if tls else "http"
        self.served: list[Served] = []
        app = Starlette(routes=[
            Route("/v1/chat/completions", self._handle, methods=["POST"]),
            Route("/v1/completions", self._handle, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])
        certfile, keyfile = tls or (None, None)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                ssl_certfile=certfile, ssl_keyfile=keyfile)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _models(self, request: Request) -> Response:
        return Response(json.dumps({"data": [{"id": "tiny-r1"}]}), media_type="application/json")

    async def _handle(self, request: Request) -> Response:
        body = json.loads(await request.body())
        served = Served(body, dict(request.headers), time.perf_counter())
        index = len(self.served)
        self.served.append(served)
        script = self.script(index, body)
        if script.status != 200:
            return Response(script.body, status_code=script.status, headers=script.headers)

        async def stream():
            for write in script.writes:
                await self._pause(write.delay_s)
                served.write_s.append(time.perf_counter())
                yield b"".join(sse(e) for e in write.events)
                if self.clock:
                    await self.clock.wait_read()
            await self._pause(script.end_delay_s)
            served.closed_s = time.perf_counter()

        return StreamingResponse(stream(), media_type="text/event-stream", headers=script.headers)

    async def _pause(self, delay_s: float) -> None:
        if self.clock:
            self.clock.advance(delay_s)
        elif delay_s:
            await asyncio.sleep(delay_s)

    @property
    def base_url(self) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"{self.scheme}://127.0.0.1:{port}"

    def __enter__(self) -> SseServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("SSE test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


VLLM_MODEL = "tiny-r1"
VLLM_ARGS = ("--max-num-seqs 16 --max-model-len 1024 --dtype float32 --gpu-memory-utilization 0.2 "
             "--enforce-eager --reasoning-parser deepseek_r1")


@contextmanager
def vllm_server(vllm_args: str = VLLM_ARGS, start_timeout_s: float = 300.0) -> Iterator[str]:
    """The real vLLM OpenAI server (the emulator's engine) on a free port; yields its base URL.

    Its log goes to a temporary file named in any start-up error. Needs the built engine
    (``.venv/bin/python -m emulator.engines.vllm build``); ``EngineNotBuilt`` says so otherwise.
    """
    from emulator.engines.vllm import instance_command
    from tests.fake_engine_process import free_port, stop_process

    port = free_port()
    argv, extra = instance_command(port, {"MODEL_NAME": VLLM_MODEL, "VLLM_ARGS": vllm_args})
    with tempfile.NamedTemporaryFile(prefix=f"r1-vllm-{port}-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(argv, env={**os.environ, **extra}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vLLM did not become healthy (exit code {process.poll()}); see {log.name}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout_s=30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
