"""uvicorn's connection protocols with the limits uvicorn lacks.

- Request headers must be complete within `header_timeout_s` of the connection opening
  (or of the first byte of a keep-alive connection's next request). uvicorn's httptools
  protocol only times out an idle keep-alive connection: its timer is cancelled by the
  first byte received, so a request line sent a byte at a time holds the socket forever.
- At most `max_connections_per_address` sockets per client address (0: no cap); the
  excess is closed before a byte of it is read.
- At most `connection_burst_per_address` new connections at once per client address,
  refilled at `connection_rate_per_address` a second (0: no limit); the excess is closed
  by `AdmissionGate` before uvicorn's protocol for it is even made (no HTTP parsing, no
  handshake). A client refused for some other reason (a 44xx close) may reconnect at
  once, each time a whole handshake and room join: without this, one address
  reconnecting hundreds of times a second holds the event loop from everyone else.
- A socket's message size limit can be raised by the app for a while: the sync endpoint
  lets a connection that may write send its handshake's sync step 2 (an offline backlog)
  up to the document limit, while every other message keeps the 1 MiB limit. websockets'
  parser reads `max_message_size` afresh before each frame, so the change holds from the
  next frame on, before any byte of it is buffered.
- A socket's binary frames can be written without ASGI (`blackboard.web.socket_writer`),
  and its binary messages read without it (`blackboard.web.socket_reader`).

`protocols(limits)` returns the classes to hand to uvicorn (`http=`, `ws=`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from blackboard.sync.room.rate_limit import TokenBucket
from blackboard.web.settings import Limits
from blackboard.web.socket_reader import FRAME_READER_EXTENSION, FrameReader
from blackboard.web.socket_writer import FRAME_WRITER_EXTENSION, FrameWriter

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent

log = logging.getLogger(__name__)
REFUSAL_LOG_INTERVAL_S = 10.0

# ASGI scope extension of a socket: call it with a size in bytes to change the largest
# message the socket accepts from the next frame on.
MESSAGE_LIMIT_EXTENSION = "blackboard.max_message_size"
SetMessageLimit = Callable[[int], None]


class RefusalLog:
    """Refused connections, logged at most one line per interval: a flood must not also
    flood the log."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._refused = 0  # since the last line
        self._logged_at = float("-inf")

    def refused(self, address: str, now: float) -> None:
        self._refused += 1
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            what = self._what
            log.warning("refused %d connection(s) %s (last: %s)", self._refused, what, address)
            self._refused, self._logged_at = 0, now


class AddressSlots:
    """Open sockets per client address, capped; a socket is counted by its transport, so
    it stays counted (once) when uvicorn hands it from the HTTP to the WebSocket protocol."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, set[asyncio.BaseTransport]] = {}
        self._log = RefusalLog(f"over the cap of {cap} per address")

    def acquire(self, transport: asyncio.BaseTransport) -> bool:
        address = _address(transport)
        if self.cap <= 0 or address is None:
            return True
        held = self._open.setdefault(address, set())
        if len(held) >= self.cap:
            self._log.refused(address, time.monotonic())
            return False
        held.add(transport)
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        address = _address(transport)
        held = self._open.get(address) if address is not None else None
        if held is None:
            return
        held.discard(transport)
        if not held:
            del self._open[address]


class AddressRate:
    """New connections per client address: a token bucket each, `burst` tokens refilled
    at `rate` a second; a connection finding no token is refused (and takes none, so a
    refused client is let in again as soon as the rate allows). Bounded: a bucket that
    has refilled is forgotten (it is the same as none), so the table holds the addresses
    seen in the last burst / rate seconds, at most `max_addresses` of them (past it the
    least recently seen is forgotten early and gets a fresh burst)."""

    def __init__(self, rate: float, burst: int, max_addresses: int = 65_536) -> None:
        if rate > 0 and burst < 1:
            raise ValueError("a connection rate needs a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}  # least recently seen first
        self._log = RefusalLog(f"over {rate:g}/s (burst {burst}) new per address")

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, address: str | None, now: float) -> bool:
        """Whether a new connection from `address` (None: not an IP socket) may open."""
        if self.rate <= 0 or address is None:
            return True
        self._forget_refilled(now)
        bucket = self._buckets.pop(address, None) or TokenBucket(self.rate, self.burst, now)
        self._buckets[address] = bucket  # re-inserted last: most recently seen
        if len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]
        if bucket.take_if_any(now):
            return True
        self._log.refused(address, now)
        return False

    def _forget_refilled(self, now: float) -> None:
        # Least recently seen first, up to the first bucket not full again: one unseen
        # for burst / rate seconds is full, so what stays was seen within that time.
        while self._buckets:
            address, bucket = next(iter(self._buckets.items()))
            if not bucket.full(now):
                break
            del self._buckets[address]


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


class AdmissionGate(asyncio.Protocol):
    """A new connection's first protocol: over its address's connection rate it is closed
    before uvicorn's protocol (an HTTP parser, logger lookups, bookkeeping: tens of
    microseconds) is even made; else that protocol is made and takes the socket over."""

    def __init__(self, make: Callable[[], asyncio.Protocol], rate: AddressRate) -> None:
        self._make = make
        self._rate = rate

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._rate.admit(_address(transport), time.monotonic()):
            transport.abort()
            return
        protocol = self._make()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, slots: AddressSlots, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots
        self._reader: FrameReader | None = None  # once the handshake succeeded

    def connection_lost(self, exc: Exception | None) -> None:
        self._slots.release(self.transport)
        super().connection_lost(exc)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            # The app's task is created but has not run yet: it sees the extensions.
            extensions = self.scope["extensions"]
            extensions[MESSAGE_LIMIT_EXTENSION] = self._set_message_limit
            if not self.conn.extensions:  # frames as they are on the wire (no deflate)
                extensions[FRAME_WRITER_EXTENSION] = FrameWriter(self)
            self._reader = extensions[FRAME_READER_EXTENSION] = FrameReader(self)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is not None and (reader.mid_frame or self._between_frames()):
            data = reader.take(data, self.conn.max_message_size)
            if not data:
                return
        super().data_received(data)

    def _between_frames(self) -> bool:
        """Whether websockets' parser holds no part of a frame or of a fragmented
        message, so the next bytes start a frame that need not go through it."""
        conn = self.conn
        return conn.state is State.OPEN and not conn.reader.buffer and conn.current_size is None

    def send_receive_event_to_app(self) -> None:
        reader = self._reader
        if reader is not None and self.curr_msg_data_type == "bytes" and reader.takes():
            frames = self.frames
            self.frames = []
            reader.receive(frames[0] if len(frames) == 1 else b"".join(frames))
            return
        super().send_receive_event_to_app()

    async def receive(self) -> ASGIReceiveEvent:
        """uvicorn's `receive`, with the reader's order and pause: an event waits for the
        messages the reader holds from before it, and reading resumes only when neither
        uvicorn's queue nor the reader's pause holds it back."""
        reader = self._reader
        if reader is None:
            return await super().receive()
        message = await self.queue.get()
        await reader.caught_up.wait()  # once nothing is held (by the pause's end, or `stop`)
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not reader.paused:
                self.transport.resume_reading()
        return message

    def _set_message_limit(self, size: int) -> None:
        self.conn.max_message_size = size


def protocols(limits: Limits) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The HTTP and WebSocket protocol factories for uvicorn's `http=` and `ws=`."""
    rate = AddressRate(limits.connection_rate_per_address, limits.connection_burst_per_address)
    slots = AddressSlots(limits.max_connections_per_address)

    def http(**uvicorn_kwargs: Any) -> asyncio.Protocol:
        make = functools.partial(
            GuardedHttpProtocol,
            slots=slots,
            header_timeout_s=limits.header_timeout_s,
            **uvicorn_kwargs,
        )
        return AdmissionGate(make, rate) if rate.rate > 0 else make()

    ws = functools.partial(GuardedWebSocketProtocol, slots=slots)
    return http, ws
