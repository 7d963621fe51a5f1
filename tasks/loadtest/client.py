"""The async load generator: closed or open loop over httpx, one ``RequestRecord`` per request.

Open loop sends on a schedule fixed before the run (``tasks.loadtest.schedule``); a request that
goes out late (busy client, concurrency cap) keeps its intended time, so its lateness is measured
rather than hidden. Timestamps come from one monotonic clock (injectable for tests), relative to
the run's start, and are taken once per network read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from tasks.loadtest.record import RequestRecord, StreamAccumulator
from tasks.loadtest.schedule import arrival_offsets
from tasks.loadtest.spec import LoadSpec, endpoint_path, request_body
from tasks.azureml.scoring import DEPLOYMENT_HEADER, BearerProvider

Clock = Callable[[], float]
SPIN_S = 0.0015  # sleep until this close to an intended time, then yield-spin: asyncio timers are ms-coarse
STOP_CHECK_S = 0.25  # a long wait between arrivals still notices a stop this often


@dataclass(frozen=True)
class Destination:
    """Where to send: a server root (``{base}/v1/...``), its auth, and optionally one deployment."""

    base_url: str
    auth: SecretStr | BearerProvider | None = None  # a key, or a provider of fresh values (``refresh`` on 401)
    deployment: str | None = None  # sets the azureml-model-deployment request header
    verify: bool | str | os.PathLike = True  # True, False, or a CA bundle path (the emulator's CA)

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"Destination(base_url={self.base_url!r}, deployment={self.deployment!r})"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        secret = self.auth() if callable(self.auth) else self.auth
        if secret is not None:
            headers["authorization"] = f"Bearer {secret.get_secret_value()}"
        if self.deployment:
            headers[DEPLOYMENT_HEADER] = self.deployment
        return headers

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def ssl_context(self) -> ssl.SSLContext:
        """Built once per run: httpx would otherwise load the CA bundle for every new client (~20 ms)."""
        return tls_context(self.verify)


def tls_context(verify: bool | str | os.PathLike = True) -> ssl.SSLContext:
    """What httpx's ``verify=`` takes for True, False or a CA bundle path (httpx 0.28 deprecates a path)."""
    if not isinstance(verify, bool):
        return ssl.create_default_context(cafile=os.fspath(verify))
    if verify:
        return httpx.create_ssl_context()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


@dataclass
class Progress:
    sent: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class LoadRun:
    """A finished (or running) run: its records by index, and when it ran."""

    spec: LoadSpec
    started_at: str  # wall-clock ISO time of t=0
    records: list[RequestRecord] = field(default_factory=list)
    elapsed_s: float = 0.0
    model: str | None = None

    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.warmup]


class ClientPool:
    """Idle one-connection httpx clients, lent out per request.

    httpcore scans every connection of a pool on each request; with one connection per client
    that work disappears (measured: ~25 % less client CPU per request at concurrency 8).
    """

    def __init__(self, dest: Destination, spec: LoadSpec):
        self._spec = spec
        self._verify = dest.ssl_context()  # one context (and CA file read) for all clients
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        client = self._idle.pop() if self._idle else self._new()
        try:
            yield client
        finally:
            self._idle.append(client)

    def _new(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            verify=self._verify,
            timeout=httpx.Timeout(self._spec.timeout_s, connect=min(self._spec.timeout_s, 30.0)),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,  # no proxy from the environment (it would distort timings); ~5 ms saved per client
        )
        self._all.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()


async def discover_model(client: httpx.AsyncClient, dest: Destination) -> str | None:
    """The first served model id from ``{base}/v1/models``; None when the server does not say."""
    try:
        response = await client.get(dest.url("/v1/models"), headers=dest.headers())
        return response.json()["data"][0]["id"] if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


async def send_one(
    client: httpx.AsyncClient, dest: Destination, spec: LoadSpec, body: bytes, record: RequestRecord, now: Clock
) -> RequestRecord:
    """Send one request and measure it into ``record`` (errors become an error class, never raise).

    A 401 with a refreshable credential (a regenerated key, a revoked token) is retried once with the
    refreshed value; the record's times span both attempts, so the cost of the refresh is measured."""
    retried = False
    while True:
        try:
            headers = dest.headers()
        except Exception as err:  # a token provider failed: only the type is kept, its message may hold a secret
            record.end_s = now()
            record.sent_s = record.sent_s if retried else record.end_s
            record.error, record.error_detail = "auth_error", type(err).__name__
            return record
        if not retried:
            record.sent_s = now()
        try:
            async with client.stream("POST", dest.url(endpoint_path(spec)), content=body, headers=headers) as resp:
                if resp.status_code == 401 and not retried and await _refreshed(dest, headers):
                    retried = True
                    continue
                await _measure(resp, spec, record, headers, now)
        except httpx.HTTPError as err:
            record.error, record.error_detail = _error_class(err), type(err).__name__
            record.end_s = now()
        return record


async def _refreshed(dest: Destination, headers: dict[str, str]) -> bool:
    """Ask the credential for its current value after the endpoint rejected the one in ``headers``
    (off the event loop: it may call Azure); False when it cannot refresh."""
    refresh = getattr(dest.auth, "refresh", None)
    if refresh is None:
        return False
    rejected = SecretStr(headers.get("authorization", "").removeprefix("Bearer "))
    try:
        await asyncio.to_thread(refresh, rejected)
    except Exception:  # the 401 is recorded as it was; the refresh error's text may hold a secret
        return False
    return True


async def _measure(resp: httpx.Response, spec: LoadSpec, record: RequestRecord, headers: dict[str, str],
                   now: Clock) -> None:
    record.status = resp.status_code
    record.deployment = resp.headers.get(DEPLOYMENT_HEADER)
    if resp.status_code != 200:
        detail = (await resp.aread())[:200].decode(errors="replace")
        record.error, record.error_detail = f"http_{resp.status_code}", _redact(detail, headers)
        record.end_s = now()
    elif spec.stream:
        acc = StreamAccumulator(record)
        async for data in resp.aiter_raw():
            acc.feed(now(), data)
        acc.finish(now())
    else:
        _whole_answer(record, await resp.aread(), now())


def _redact(text: str, headers: dict[str, str]) -> str:
    """A server that echoes the credential in an error body must not put it in our records."""
    secret = headers.get("authorization", "").removeprefix("Bearer ")
    return text.replace(secret, "***") if secret else text


def _whole_answer(record: RequestRecord, raw: bytes, now: float) -> None:
    """A non-streamed answer: every token arrives at once, so TTFT = E2E and TPOT is undefined."""
    record.end_s = now
    try:
        body: Any = json.loads(raw)
        choice = body["choices"][0]
        message = choice.get("message") or {}
        usage = body.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError):
        record.error, record.error_detail = "bad_payload", raw[:120].decode(errors="replace")
        return
    record.first_token_s = record.last_token_s = now
    if message.get("content") or choice.get("text"):
        record.first_answer_s = now
    record.finish_reason = choice.get("finish_reason")
    record.prompt_tokens = usage.get("prompt_tokens")
    record.completion_tokens = usage.get("completion_tokens")
    record.usage_reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or None


def _error_class(err: httpx.HTTPError) -> str:
    if isinstance(err, httpx.TimeoutException):
        return "timeout"
    if isinstance(err, httpx.ConnectError):
        return "connect_error"
    if isinstance(err, httpx.RemoteProtocolError):
        return "protocol_error"
    if isinstance(err, httpx.ReadError):
        return "read_error"
    return "http_error"


async def run_load(
    dest: Destination,
    spec: LoadSpec,
    *,
    clock: Clock = time.perf_counter,
    stop: asyncio.Event | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_send: Callable[[RequestRecord], None] | None = None,
    on_start: Callable[[float], None] | None = None,
    progress: Callable[[Progress, float], None] | None = None,
    progress_every_s: float = 2.0,
) -> LoadRun:
    """Run ``spec`` against ``dest`` until its count/duration bound (or ``stop``) and return the records.

    ``on_record`` sees each record as it completes and ``on_send`` as it is created (the live-traffic
    view uses both, to know what is still in flight); ``on_start`` gets
    the clock reading that is t=0 for every record; ``progress`` is
    called every ``progress_every_s`` with the counters and the elapsed seconds.
    """
    pool = ClientPool(dest, spec)
    stop = stop or asyncio.Event()
    run = LoadRun(spec=spec, started_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
    counters = Progress()
    t0 = clock()

    def now() -> float:
        return clock() - t0

    try:
        async with pool.client() as client:  # the first client pays httpx's lazy imports here
            run.model = spec.model or await discover_model(client, dest)
        request_body(spec, 0, run.model)  # loads the prompt set now, not during the first send
        schedule = arrival_offsets(spec.rate, spec.arrival, count=spec.total_requests, duration_s=spec.duration_s,
                                   burstiness=spec.burstiness, seed=spec.seed) if spec.open_loop else []
        t0 = clock()  # discovery, loading and the schedule are not part of the run
        if on_start:
            on_start(t0)

        async def fire(index: int, intended: float) -> None:
            record = RequestRecord(index=index, intended_s=intended, sent_s=intended, warmup=index < spec.warmup)
            run.records.append(record)
            counters.sent += 1
            if on_send:
                on_send(record)
            body = request_body(spec, index, run.model)
            async with pool.client() as client:
                await send_one(client, dest, spec, body, record, now)
            counters.done += 1
            counters.failed += not record.ok
            if on_record:
                on_record(record)

        if spec.open_loop:
            driver = _open_loop(spec, schedule, fire, now, stop)
        else:
            driver = _closed_loop(spec, fire, now, stop)
        reporter = asyncio.create_task(_report(progress, counters, now, progress_every_s)) if progress else None
        try:
            await driver
        finally:
            if reporter:
                reporter.cancel()
        run.elapsed_s = now()
        if progress:
            progress(counters, run.elapsed_s)
    finally:
        await pool.aclose()
    run.records.sort(key=lambda r: r.index)
    return run


async def _closed_loop(spec: LoadSpec, fire: Callable[[int, float], Awaitable[None]], now: Clock,
                       stop: asyncio.Event) -> None:
    """``concurrency`` workers, each sending its next request as soon as its previous one ends."""
    next_index = iter(range(spec.total_requests or 2**62))

    async def worker() -> None:
        while not stop.is_set():
            t = now()
            if spec.duration_s is not None and t >= spec.duration_s:
                return
            index = next(next_index, None)
            if index is None:
                return
            await fire(index, t)

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))


async def _open_loop(spec: LoadSpec, schedule: list[float], fire: Callable[[int, float], Awaitable[None]],
                     now: Clock, stop: asyncio.Event) -> None:
    """Dispatch on the precomputed schedule; a cap makes requests wait (the wait is send lag)."""
    cap = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
    tasks: set[asyncio.Task] = set()

    async def capped(index: int, intended: float) -> None:
        if cap is None:
            await fire(index, intended)
            return
        async with cap:
            await fire(index, intended)

    for index, intended in enumerate(schedule):
        if await _wait_until(intended, now, stop):
            break
        task = asyncio.create_task(capped(index, intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


async def _wait_until(t: float, now: Clock, stop: asyncio.Event) -> bool:
    """Sleep until ``t`` on the run clock (coarse sleep, then spin); True if ``stop`` was set meanwhile."""
    while (delay := t - now() - SPIN_S) > 0 and not stop.is_set():
        await asyncio.sleep(min(delay, STOP_CHECK_S))
    while now() < t and not stop.is_set():
        await asyncio.sleep(0)
    return stop.is_set()


async def _report(progress: Callable[[Progress, float], None], counters: Progress, now: Clock,
                  every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        progress(counters, now())


class BackgroundLoad:
    """Live traffic for a bake: an open- or closed-loop load on its own thread until ``stop()``.

    ``now()`` reads the records' clock, so a caller can mark a window (``start = bg.now()`` ... ) and
    judge ``bg.records()`` in it, per deployment, with ``tasks.loadtest.slo``. The spec's bound still applies
    (give a duration longer than the bake); ``stop()`` ends the load sooner.
    """

    def __init__(self, dest: Destination, spec: LoadSpec, clock: Clock = time.perf_counter):
        self.dest, self.spec, self._clock = dest, spec, clock
        self._completed: list[RequestRecord] = []
        self._in_flight: dict[int, RequestRecord] = {}
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._t0 = 0.0
        self._result: LoadRun | None = None
        self._error: BaseException | None = None

    def start(self) -> BackgroundLoad:
        self._thread = threading.Thread(target=self._main, name="r1-background-load", daemon=True)
        self._thread.start()
        self._started.wait()
        return self

    def _main(self) -> None:
        async def body() -> LoadRun:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            return await run_load(self.dest, self.spec, clock=self._clock, stop=self._stop,
                                  on_record=self._keep, on_send=self._sent, on_start=self._on_start)

        try:
            self._result = asyncio.run(body())
        except BaseException as err:  # surfaced by stop()
            self._error = err
        finally:
            self._started.set()

    def _on_start(self, t0: float) -> None:
        self._t0 = t0
        self._started.set()

    def _sent(self, record: RequestRecord) -> None:
        with self._lock:
            self._in_flight[record.index] = record

    def _keep(self, record: RequestRecord) -> None:
        with self._lock:
            self._in_flight.pop(record.index, None)
            self._completed.append(record)

    def settle(self, before: float, timeout_s: float, poll_s: float = 0.05) -> int:
        """Wait until every request sent before ``before`` has completed (or ``timeout_s`` passed).

        Judging a window only after this removes survivorship bias: slow requests still in flight at
        the end of a bake would otherwise be left out and flatter the latency percentiles.
        Returns how many are still in flight.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = sum(1 for r in self._in_flight.values() if r.intended_s < before)
            if not pending or time.monotonic() >= deadline or not (self._thread and self._thread.is_alive()):
                return pending
            time.sleep(poll_s)

    def now(self) -> float:
        """Seconds on the records' clock (records' ``sent_s`` are comparable to it)."""
        return self._clock() - self._t0

    def records(self) -> list[RequestRecord]:
        """Completed records so far (a snapshot)."""
        with self._lock:
            return list(self._completed)

    def stop(self, timeout_s: float = 60.0) -> LoadRun:
        """Stop sending, wait for requests in flight, and return the whole run."""
        if self._loop and self._stop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(timeout_s)
        if self._error:
            raise self._error
        if self._result is None:
            raise TimeoutError("background load did not stop in time")
        return self._result

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
