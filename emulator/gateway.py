"""The emulator's scoring gateway: an ASGI app that answers every endpoint's ``scoringUri`` the way
Azure ML's front end does — auth before anything else, weighted / header / mirror routing,
Azure's 429 / 408 / 424 / 413 semantics — and streams engine responses through chunk by chunk.

``create_gateway_app(directory)`` is mounted by the control plane on its second HTTPS listener;
behaviour and error shapes are documented in docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any, NamedTuple

from emulator.gateway_routing import GatewayError, choose_route, engine_path, split_scoring_path
from emulator.gateway_upstream import InvalidUpstreamRequest, UpstreamError, UpstreamPool, UpstreamResponse
from emulator.metrics import RequestLog, Seen
from emulator.scoring_directory import DeploymentView, ScoringDirectory

# Azure does not document the scoring payload limit we could verify; 1.5 MiB is the figure in
# circulation for managed online endpoints (docs/gateway.md).
MAX_BODY_BYTES = 1536 * 1024
DEPLOYMENT_HEADER = "azureml-model-deployment"
MODEL_STATUS_HEADER = "ms-azureml-model-error-statuscode"
MODEL_REASON_HEADER = "ms-azureml-model-error-reason"
# Never forwarded to an engine: hop-by-hop headers, and the caller's credential.
DROPPED_REQUEST_HEADERS = frozenset(
    {b"host", b"authorization", b"connection", b"keep-alive", b"content-length", b"transfer-encoding",
     b"x-request-id", b"upgrade", b"te", b"proxy-authorization", b"expect"}
)
# Hop-by-hop headers, the gateway's own, and those uvicorn adds itself (no duplicates).
DROPPED_RESPONSE_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server", DEPLOYMENT_HEADER.encode()}
)

# A decoded path holding these (``%00``, ``%0D%0A``) is refused as a front end would, before anything else.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Exchange(NamedTuple):
    """What is sent to an instance (and, for a mirror, sent again)."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _json_error(status: int, message: str) -> bytes:
    return json.dumps({"error": {"code": HTTPStatus(status).phrase.replace(" ", ""), "message": message}}).encode()


async def _send_whole(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ScoringGateway:
    """One gateway for all endpoints; in-flight counts and round-robin cursors live here."""

    def __init__(self, directory: ScoringDirectory, *, max_body_bytes: int = MAX_BODY_BYTES,
                 rng: random.Random | None = None, measured: RequestLog | None = None) -> None:
        self._directory = directory
        self._measured = measured  # each routed request's status and latency: the endpoint's Azure Monitor metrics
        self._max_body = max_body_bytes
        self._rng = rng or random.Random()
        self._in_flight: Counter[tuple[str, str]] = Counter()
        self._cursor: Counter[tuple[str, str]] = Counter()
        self._mirrors: set[asyncio.Task[None]] = set()
        self._upstream = UpstreamPool()

    @property
    def pending_mirrors(self) -> int:
        """Mirror copies still on their way (their answers are dropped)."""
        return len(self._mirrors)

    def in_flight(self, endpoint: str, deployment: str) -> int:
        """Requests (mirror copies included) this gateway has at the deployment right now."""
        return self._in_flight[(endpoint, deployment)]

    async def aclose(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        self._upstream.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            request_id = str(uuid.uuid4())
            seen = Seen(send)
            try:
                await self._score(scope, receive, seen, request_id)
            except GatewayError as err:
                headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                           *((k.encode(), v.encode()) for k, v in err.headers)]
                await _send_whole(seen.send, err.status, _json_error(err.status, err.message), headers)
            finally:
                seen.into(self._measured)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _score(self, scope: Scope, receive: Receive, seen: Seen, request_id: str) -> None:
        path = scope["path"]
        if _CONTROL_CHARACTERS.search(path):
            raise GatewayError(400, "The request path contains control characters.")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        name, _ = split_scoring_path(path)
        rest = _raw_rest(scope, root)
        endpoint = self._directory.endpoint(name)
        if endpoint is None:
            raise GatewayError(404, f"Endpoint '{name}' not found.")
        headers: dict[bytes, bytes] = dict(scope["headers"])
        self._authorize(name, headers.get(b"authorization", b""))
        body = await self._read_body(receive, headers.get(b"content-length"))
        target = headers.get(DEPLOYMENT_HEADER.encode())
        route = choose_route(endpoint, target.decode("latin-1") if target is not None else None, self._rng)
        deployment = endpoint.deployments[route.deployment]
        seen.routed(name, deployment.name)
        instance = self._pick_instance(name, deployment)
        forwarded = [(k, v) for k, v in scope["headers"] if k not in DROPPED_REQUEST_HEADERS]
        forwarded.append((b"x-request-id", request_id.encode()))
        query = scope.get("query_string", b"")
        upstream = engine_path(rest, deployment.scoring_path)
        target_path = f"{upstream}?{query.decode('latin-1')}" if query else upstream
        exchange = Exchange(scope["method"], target_path, forwarded, body)
        if route.mirror is not None:
            self._start_mirror(name, endpoint.deployments[route.mirror], exchange)
        key = (name, deployment.name)
        self._in_flight[key] += 1
        try:
            await self._forward(instance, exchange, deployment, request_id, receive, seen.send)
        finally:
            self._in_flight[key] -= 1

    def _authorize(self, endpoint: str, header: bytes) -> None:
        scheme, _, credential = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise GatewayError(401, "An Authorization header with a Bearer key or token is required.",
                               (("www-authenticate", "Bearer"),))
        if not self._directory.authorize(endpoint, credential.strip()):
            raise GatewayError(401, "The key or token is not valid for this endpoint, or it has expired.",
                               (("www-authenticate", 'Bearer error="invalid_token"'),))

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        limit = self._max_body
        too_large = GatewayError(413, f"The request body is larger than the {limit} bytes an endpoint accepts.")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(400, "The client went away before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _pick_instance(self, endpoint: str, deployment: DeploymentView) -> str:
        """A ready instance (round robin), if the deployment has room for one more request."""
        key = (endpoint, deployment.name)
        if not deployment.ready_instances:
            raise GatewayError(503, f"Deployment '{deployment.name}' has no ready instance.")
        capacity = 2 * deployment.max_concurrent_requests_per_instance * deployment.instance_count
        if self._in_flight[key] >= capacity:
            raise GatewayError(429, "Too many pending requests: more than 2 x max_concurrent_requests_per_"
                               f"instance x instance_count ({capacity}) requests are in flight.")
        self._cursor[key] += 1
        return deployment.ready_instances[self._cursor[key] % len(deployment.ready_instances)]

    async def _forward(self, instance: str, exchange: Exchange, deployment: DeploymentView, request_id: str,
                       receive: Receive, send: Send) -> None:
        """Run the exchange with the engine while watching the client: a client that goes away (streaming
        or not) cancels it, which closes the engine connection and frees the in-flight slot at once."""
        gone = asyncio.ensure_future(_client_gone(receive))
        work = asyncio.ensure_future(self._exchange(instance, exchange, deployment, request_id, send))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                await asyncio.wait((work,))
        if not work.cancelled():
            work.result()  # the gateway's own answers (GatewayError) are raised here

    async def _exchange(self, instance: str, exchange: Exchange, deployment: DeploymentView, request_id: str,
                        send: Send) -> None:
        deadline = asyncio.get_running_loop().time() + deployment.request_timeout_ms / 1000
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._upstream.request(instance, *exchange)
        except TimeoutError:
            raise _timeout(deployment) from None
        except InvalidUpstreamRequest as err:
            raise GatewayError(400, f"The request cannot be forwarded: {err}") from None
        except UpstreamError:
            raise GatewayError(502, f"The instance of deployment '{deployment.name}' failed to answer.") from None
        extra = [(DEPLOYMENT_HEADER.encode(), deployment.name.encode()), (b"x-request-id", request_id.encode())]
        try:
            if not 200 <= response.status < 300:
                await self._model_error(response, deadline, extra, send)
            else:
                await self._stream(response, deadline, deployment, extra, send)
        finally:
            response.close()

    async def _model_error(self, response: UpstreamResponse, deadline: float, extra: list[tuple[bytes, bytes]],
                           send: Send) -> None:
        """Azure's 424: the engine answered non-2xx; its status and body are passed along."""
        try:
            async with asyncio.timeout_at(deadline):
                body = await response.read()
        except (TimeoutError, UpstreamError):
            body = b""
        status = response.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        headers = [(b"content-type", response.header(b"content-type") or b"application/json"),
                   (MODEL_STATUS_HEADER.encode(), str(status).encode()),
                   (MODEL_REASON_HEADER.encode(), reason.encode()), *extra]
        await _send_whole(send, 424, body, headers)

    async def _stream(self, response: UpstreamResponse, deadline: float, deployment: DeploymentView,
                      extra: list[tuple[bytes, bytes]], send: Send) -> None:
        headers = [(k, v) for k, v in response.headers if k not in DROPPED_RESPONSE_HEADERS]
        is_sse = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        started = False
        try:
            async with asyncio.timeout_at(deadline):
                chunks = response.chunks()
                first = await anext(chunks, b"")
                await send({"type": "http.response.start", "status": response.status, "headers": headers + extra})
                started = True
                await send({"type": "http.response.body", "body": first, "more_body": True})
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (TimeoutError, UpstreamError) as err:
            status = 408 if isinstance(err, TimeoutError) else 502
            if not started:
                if status == 408:
                    raise _timeout(deployment) from None
                raise GatewayError(502, f"The instance of deployment '{deployment.name}' failed mid-response.") from None
            if is_sse:
                await self._abort_event(send, status, deployment)

    @staticmethod
    async def _abort_event(send: Send, status: int, deployment: DeploymentView) -> None:
        """A started stream cannot change its status: say why in one last SSE event. The response then
        ends without its final chunk, so no client mistakes the truncated answer for a whole one."""
        reason = (f"request_timeout_ms ({deployment.request_timeout_ms} ms) exceeded" if status == 408
                  else f"the instance of deployment '{deployment.name}' failed")
        event = json.dumps({"error": {"code": status, "message": f"Stream aborted: {reason}."}})
        await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(), "more_body": True})

    def _start_mirror(self, endpoint: str, deployment: DeploymentView, exchange: Exchange) -> None:
        """Send a copy to the mirror deployment; its answer, errors and limits never reach the client."""
        key = (endpoint, deployment.name)
        try:
            instance = self._pick_instance(endpoint, deployment)
        except GatewayError:
            return  # no room or not ready: the copy is dropped

        async def mirror() -> None:
            try:
                async with asyncio.timeout(deployment.request_timeout_ms / 1000):
                    response = await self._upstream.request(instance, *exchange)
                    try:
                        async for _ in response.chunks():
                            pass
                    finally:
                        response.close()
            except (TimeoutError, UpstreamError):
                pass
            finally:
                self._in_flight[key] -= 1

        self._in_flight[key] += 1  # counted now, so the next request already sees it
        task = asyncio.ensure_future(mirror())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)


async def _client_gone(receive: Receive) -> None:
    """Returns once the client has disconnected (the request body has been read by then)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _raw_rest(scope: Scope, root: str) -> str:
    """What follows ``/endpoints/{name}/`` as the client sent it (still percent-encoded), so the engine gets the
    path it was sent; latin-1 keeps every byte."""
    raw = scope.get("raw_path") or scope["path"].encode()
    if root and raw.startswith(root.encode()):
        raw = raw[len(root.encode()):]
    parts = raw.split(b"/", 3)
    return parts[3].decode("latin-1") if len(parts) == 4 else ""


def _timeout(deployment: DeploymentView) -> GatewayError:
    return GatewayError(408, f"The request exceeded request_timeout_ms ({deployment.request_timeout_ms} ms).")


def create_gateway_app(directory: ScoringDirectory, *, max_body_bytes: int = MAX_BODY_BYTES,
                       rng: random.Random | None = None, measured: RequestLog | None = None) -> ScoringGateway:
    """The ASGI app that serves ``{scoring_base}/endpoints/{name}/…`` for every endpoint in ``directory``;
    routed requests are recorded in ``measured`` (emulator/metrics.py)."""
    return ScoringGateway(directory, max_body_bytes=max_body_bytes, rng=rng, measured=measured)
