"""Binary frames written straight to a socket's transport: the path every broadcast takes.

Through ASGI, each message to each recipient is an event dict, three awaited coroutines
(Starlette, its exception wrapper, uvicorn), a websockets `Frame` serialized on its own
and a `transport.write` (a system call) of its own. Here a message costs a frame header
(a table lookup below 126 bytes); a broadcast's payload, the same bytes object for every
recipient, is framed once; and a socket's frames of one loop tick go out in one write
(uvloop sends a write at once when the socket's buffer is empty, so the ticks' frames
are gathered here). One callback per tick flushes every socket written to in it.

Only for sockets that negotiated no extension (the server offers none: per-message
deflate would compress per socket). The closing handshake stays with uvicorn; frames
still waiting when the socket closes are dropped, as ASGI sends to a closed socket fail.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger(__name__)

# ASGI scope extension of a socket: its `FrameWriter`.
FRAME_WRITER_EXTENSION = "blackboard.frame_writer"
_FIN_BINARY = 0x82
_SMALL_HEADERS = [bytes((_FIN_BINARY, n)) for n in range(126)]
# Up to this size header and payload are joined into one bytes object, shared by a
# broadcast's recipients; above it they are queued as two pieces, so a 20 MB sync step 2
# is not copied to prepend two bytes.
JOIN_LIMIT = 64 * 1024


def binary_frame_header(size: int) -> bytes:
    """The header of an unmasked, unfragmented binary frame of `size` bytes (RFC 6455)."""
    if size < 126:
        return _SMALL_HEADERS[size]
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, size)
    return struct.pack("!BBQ", _FIN_BINARY, 127, size)


class _LastFrame:
    """The frame of the last payload joined: the room hands every recipient of a
    broadcast the same bytes object, so only the first one frames it. (Holding that
    payload keeps its identity from being reused by another object.)"""

    payload: bytes = b""
    frame: bytes = _SMALL_HEADERS[0]

    @classmethod
    def join(cls, payload: bytes) -> bytes:
        """Frame `payload` and remember it (offer checks `payload` first, inline)."""
        cls.payload, cls.frame = payload, binary_frame_header(len(payload)) + payload
        return cls.frame


class SocketClosed(ConnectionError):
    """The socket is closed or closing: nothing more can be sent on it."""


class _Flush:
    """The writers with frames waiting in this loop tick, flushed by one callback at
    its end (a callback per socket would cost more than its frames)."""

    writers: list[FrameWriter] = []
    loop: asyncio.AbstractEventLoop | None = None  # where the waiting flush is scheduled

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop) -> list[FrameWriter]:
        """A new list of writers, flushed at the end of this tick of `loop`. Writers left
        by a loop that stopped before its flush ran (a test's loop) are dropped: their
        sockets went with it."""
        cls.writers, cls.loop = [], loop
        loop.call_soon(cls.run)
        return cls.writers

    @classmethod
    def run(cls) -> None:
        writers, cls.writers = cls.writers, []
        for writer in writers:
            try:
                writer.flush()
            except Exception:  # one socket's failure must not keep the others' frames
                log.exception("flushing a socket's frames failed")


class FrameWriter:
    # A hot room touches a thousand writers per update: slots and one list kept for
    # good (cleared, not replaced, by each flush) spare each of them memory reads and
    # an allocation.
    __slots__ = ("_pending", "_protocol", "_transport")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport  # the protocol's since it connected, for good
        self._pending: list[bytes] = []  # this tick's frames (a big one: header, payload)

    def offer(self, payload: bytes) -> bool:
        """Queue one binary frame for the end of this loop tick, unless the transport
        holds more than its high-water mark (False: the caller keeps the frame). Raises
        SocketClosed if the socket is closing. Checked at a tick's first frame only:
        nothing is written, so nothing changes, until the tick's flush."""
        pending = self._pending
        if not pending:
            protocol = self._protocol
            if protocol.close_sent or self._transport.is_closing():
                raise SocketClosed("the socket is closed")
            if not protocol.writable.is_set():
                return False
            # Inline, not a call: a hot room's broadcast comes here a thousand times.
            writers = _Flush.writers
            if not writers or _Flush.loop is not protocol.loop:
                writers = _Flush.start(protocol.loop)
            writers.append(self)
        if payload is _LastFrame.payload:  # a broadcast's recipients after its first
            pending.append(_LastFrame.frame)
        elif len(payload) <= JOIN_LIMIT:
            pending.append(_LastFrame.join(payload))
        else:
            pending += (binary_frame_header(len(payload)), payload)
        return True

    async def send(self, payload: bytes) -> None:
        """`offer`, after waiting while the transport is over its high-water mark (so
        the caller's outbox, which is capped, holds the backlog)."""
        while not self.offer(payload):
            await self._protocol.writable.wait()

    def flush(self) -> None:
        """Write the queued frames now (before a close frame, which must come last)."""
        pending = self._pending
        if not pending:
            return
        transport = self._transport
        try:
            # A close sent or received since (uvicorn's closing handshake) drops them.
            if not self._protocol.close_sent and not transport.is_closing():
                if len(pending) == 1:
                    transport.write(pending[0])
                else:  # one system call for all of them, without joining them first
                    transport.writelines(pending)
        finally:
            pending.clear()  # written or dropped, never again
