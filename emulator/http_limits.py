"""A header timeout for both HTTPS listeners (slowloris): uvicorn 0.54 has none.

uvicorn's ``timeout_keep_alive`` only runs between requests, after a response; a connection that
never sends a byte, or sends half a request line and stalls, stays open for ever. This protocol (the
h11 one uvicorn uses here, plus a timer) closes a connection whose request head is not complete
``HEADER_TIMEOUT_SECONDS`` after the connection was made or after the first byte of a later request
on it. Request heads are limited to h11's 16 KiB; request bodies are capped by the apps
(ARM 4 MiB, scoring 1.5 MiB). TLS handshakes are bounded by asyncio's own 60 s.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_SECONDS = 10.0
log = logging.getLogger(__name__)


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Time a request head while one is awaited (h11: the client is IDLE); stop once it is complete."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
        else:
            self._stop_timer()

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        log.info("closing a connection from %s: no complete request head within %g s",
                 self.client, self.header_timeout)
        self.transport.close()
