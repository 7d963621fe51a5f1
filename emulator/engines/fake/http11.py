"""A minimal HTTP/1.1 server on asyncio streams.

The fake engine has to outrun the gateway it is benchmarked behind; uvicorn's pure-Python h11
parser (httptools is not installed) would be the bottleneck, and the fake needs nothing but
keep-alive, Content-Length or chunked request bodies, and chunked streaming responses.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class BadRequest(Exception):
    """The bytes on the wire are not an HTTP/1.1 request this server accepts."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Response:
    """Writes one response: either whole (``send``) or streamed in chunks (``start`` / ``write`` / ``end``)."""

    def __init__(self, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        self._writer = writer
        self._keep_alive = keep_alive
        self.status = 0
        self.finished = False

    def _head(self, status: int, content_type: str, framing: str) -> bytes:
        self.status = status
        connection = "keep-alive" if self._keep_alive else "close"
        return (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {content_type}\r\n"
            f"{framing}\r\nconnection: {connection}\r\n\r\n"
        ).encode()

    async def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self._writer.write(self._head(status, content_type, f"content-length: {len(body)}") + body)
        self.finished = True
        await self._writer.drain()

    async def start(self, status: int, content_type: str = "text/event-stream") -> None:
        self._writer.write(self._head(status, content_type, "transfer-encoding: chunked"))

    async def write(self, data: bytes) -> None:
        """Send one chunk now (the client sees it immediately; backpressure applies)."""
        if data:
            self._writer.write(b"%x\r\n%b\r\n" % (len(data), data))
            await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        self.finished = True
        await self._writer.drain()


Handler = Callable[[Request, Response], Awaitable[None]]


def _parse_head(head: bytes) -> tuple[Request, bool]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, "malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, f"unsupported version {version}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method, path, query, headers, b""), keep_alive


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                length = int(line.split(b";")[0], 16)
            except ValueError:
                raise BadRequest(400, "malformed chunk size") from None
            size += length
            if size > MAX_BODY_BYTES:
                raise BadRequest(413, "request body too large")
            chunk = await reader.readexactly(length + 2)
            if length == 0:
                while chunk != b"\r\n":  # trailers, then the blank line
                    chunk = await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(chunk[:-2])
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "malformed content-length") from None
    if length < 0:
        raise BadRequest(400, "malformed content-length")
    if length > MAX_BODY_BYTES:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(length) if length else b""


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise BadRequest(431, "request head too large") from None
            request, keep_alive = _parse_head(head)
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await _read_body(reader, request.headers)
            response = Response(writer, keep_alive)
            try:
                await handler(Request(request.method, request.path, request.query, request.headers, body), response)
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception:  # a bug in the handler: answer 500 if still possible, and say why
                traceback.print_exc()
                if not response.status:
                    await Response(writer, keep_alive=False).send(500, b"internal error", "text/plain")
                return
            if not (keep_alive and response.finished):
                return
    except BadRequest as err:
        try:
            await Response(writer, keep_alive=False).send(err.status, str(err).encode(), "text/plain")
        except ConnectionError:
            pass
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client went away
    finally:
        writer.close()


async def start_server(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` and answer every request with ``handler``."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connection(reader, writer, handler)

    return await asyncio.start_server(on_connection, host, port, limit=MAX_HEAD_BYTES, backlog=1024)
