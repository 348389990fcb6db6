"""uvicorn's connection protocols with the limits uvicorn lacks.

- Request headers must be complete within `header_timeout_s` of the connection opening
  (or of the first byte of a keep-alive connection's next request). uvicorn's httptools
  protocol only times out an idle keep-alive connection: its timer is cancelled by the
  first byte received, so a request line sent a byte at a time holds the socket forever.
- At most `max_connections_per_address` sockets per client address (0: no cap); the
  excess is closed before a byte of it is read.
- A socket's message size limit can be raised by the app for a while: the sync endpoint
  lets a connection that may write send its handshake's sync step 2 (an offline backlog)
  up to the document limit, while every other message keeps the 1 MiB limit. websockets'
  parser reads `max_message_size` afresh before each frame, so the change holds from the
  next frame on, before any byte of it is buffered.

`protocols(limits)` returns the classes to hand to uvicorn (`http=`, `ws=`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from web.settings import Limits

log = logging.getLogger(__name__)
REFUSAL_LOG_INTERVAL_S = 10.0

# ASGI scope extension of a socket: call it with a size in bytes to change the largest
# message the socket accepts from the next frame on.
MESSAGE_LIMIT_EXTENSION = "blackboard.max_message_size"
SetMessageLimit = Callable[[int], None]


class AddressSlots:
    """Open sockets per client address, capped; a socket is counted by its transport, so
    it stays counted (once) when uvicorn hands it from the HTTP to the WebSocket protocol."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, set[asyncio.BaseTransport]] = {}
        self._refused = 0  # since the last warning
        self._warned_at = float("-inf")

    def acquire(self, transport: asyncio.BaseTransport) -> bool:
        address = _address(transport)
        if self.cap <= 0 or address is None:
            return True
        held = self._open.setdefault(address, set())
        if len(held) >= self.cap:
            self._warn_refused(address)
            return False
        held.add(transport)
        return True

    def _warn_refused(self, address: str) -> None:
        # At most one line per interval: a flood must not also flood the log.
        self._refused += 1
        now = time.monotonic()
        if now - self._warned_at >= REFUSAL_LOG_INTERVAL_S:
            log.warning(
                "refused %d connection(s) over the cap of %d per address (last: %s)",
                self._refused,
                self.cap,
                address,
            )
            self._refused, self._warned_at = 0, now

    def release(self, transport: asyncio.BaseTransport) -> None:
        address = _address(transport)
        held = self._open.get(address) if address is not None else None
        if held is None:
            return
        held.discard(transport)
        if not held:
            del self._open[address]


def _address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, slots: AddressSlots, header_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._slots.acquire(transport):
            transport.abort()  # connection_lost follows and does the bookkeeping
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self._slots.release(self.transport)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # the next request on a keep-alive connection

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self._header_timeout_s > 0:
            self._header_timer = self.loop.call_later(
                self._header_timeout_s, self._headers_too_slow
            )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.abort()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, slots: AddressSlots, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots

    def connection_lost(self, exc: Exception | None) -> None:
        self._slots.release(self.transport)
        super().connection_lost(exc)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            # The app's task is created but has not run yet: it sees the extension.
            self.scope["extensions"][MESSAGE_LIMIT_EXTENSION] = self._set_message_limit

    def _set_message_limit(self, size: int) -> None:
        self.conn.max_message_size = size


def protocols(limits: Limits) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The HTTP and WebSocket protocol factories for uvicorn's `http=` and `ws=`."""
    slots = AddressSlots(limits.max_connections_per_address)
    http = functools.partial(
        GuardedHttpProtocol, slots=slots, header_timeout_s=limits.header_timeout_s
    )
    ws = functools.partial(GuardedWebSocketProtocol, slots=slots)
    return http, ws
