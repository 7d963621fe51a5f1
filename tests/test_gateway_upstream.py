"""The gateway's engine connection pool against a scripted raw HTTP server."""

from __future__ import annotations

import asyncio

import pytest

from emulator.gateway_upstream import UpstreamError, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def scripted_server(script):
    """Each accepted connection gets the next list of answers, one per request: bytes, a list of
    pieces sent 10 ms apart (None among them: die mid-answer), or None (die without answering)."""
    connections = iter(script)
    accepted = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        for answer in next(connections):
            await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                writer.close()
                return
            for part in answer if isinstance(answer, list) else [answer]:
                if part is None:  # dies mid-answer
                    writer.close()
                    return
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)
        await reader.read()  # keep the connection open until the client closes it

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted


async def get(pool: UpstreamPool, url: str) -> bytes:
    response = await pool.request(url, "GET", "/", [], b"")
    try:
        return await response.read()
    finally:
        response.close()


async def test_keep_alive_reuses_one_connection_and_streams_chunks():
    pieces = [CHUNKED, b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"]
    server, url, accepted = await scripted_server([[OK, OK, pieces]])
    pool = UpstreamPool()
    async with server:
        assert await get(pool, url) == b"ok"
        assert await get(pool, url) == b"ok"
        response = await pool.request(url, "POST", "/v1/x", [(b"content-type", b"application/json")], b"{}")
        assert [chunk async for chunk in response.chunks()] == [b"hello", b" world"]
        response.close()
        assert len(accepted) == 1
        pool.close()


async def test_a_pooled_connection_dying_before_answering_is_retried_once():
    server, url, accepted = await scripted_server([[OK, None], [OK]])
    pool = UpstreamPool()
    async with server:
        assert await get(pool, url) == b"ok"
        assert await get(pool, url) == b"ok"  # first try hit the dying connection, the retry a new one
        assert len(accepted) == 2
        pool.close()


async def test_a_fresh_connection_that_dies_is_an_error_not_a_retry():
    server, url, accepted = await scripted_server([[None], [OK]])
    pool = UpstreamPool()
    async with server:
        with pytest.raises(UpstreamError):
            await get(pool, url)
        assert len(accepted) == 1


async def test_an_answer_broken_off_midway_is_an_error_and_the_connection_is_dropped():
    server, url, accepted = await scripted_server([[[CHUNKED, b"5\r\nhello\r\n", None]], [OK]])
    pool = UpstreamPool()
    async with server:
        response = await pool.request(url, "GET", "/", [], b"")
        with pytest.raises(UpstreamError):
            async for _ in response.chunks():
                pass
        response.close()
        assert await get(pool, url) == b"ok" and len(accepted) == 2


async def test_nothing_listening_is_an_upstream_error():
    server, url, _ = await scripted_server([])
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await get(UpstreamPool(), url)
