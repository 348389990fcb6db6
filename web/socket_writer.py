"""Binary frames written straight to a socket's transport: the path every broadcast takes.

Through ASGI, each message to each recipient is an event dict, three awaited coroutines
(Starlette, its exception wrapper, uvicorn), a websockets `Frame` serialized on its own
and a `transport.write` (a system call) of its own. Here a message costs a frame header
(a table lookup below 126 bytes) and a `transport.write`; a broadcast's payload, the
same bytes object for every recipient, is framed once. uvloop's transports (what
`blackboard serve` runs on) buffer what is written during a loop tick and send it in one
system call at the tick's end, so a socket's frames of one tick go out together.

Only for sockets that negotiated no extension (the server offers none: per-message
deflate would compress per socket). The closing handshake stays with uvicorn and writes
to the same transport, so frames written before a close frame go out before it.
"""

from __future__ import annotations

import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# ASGI scope extension of a socket: its `FrameWriter`.
FRAME_WRITER_EXTENSION = "blackboard.frame_writer"
_FIN_BINARY = 0x82
_SMALL_HEADERS = [bytes((_FIN_BINARY, n)) for n in range(126)]
# Up to this size header and payload are joined into one bytes object (one buffer for
# the loop to send, shared by a broadcast's recipients); above it they are written as
# two pieces, so a 20 MB sync step 2 is not copied to prepend two bytes.
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
    def of(cls, payload: bytes) -> bytes:
        if payload is not cls.payload:
            cls.payload, cls.frame = payload, binary_frame_header(len(payload)) + payload
        return cls.frame


class SocketClosed(ConnectionError):
    """The socket is closed or closing: nothing more can be sent on it."""


class FrameWriter:
    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def ready(self) -> bool:
        """Whether a frame can be taken now: the socket is open and its transport holds
        less than its high-water mark."""
        protocol = self._protocol
        return (
            protocol.writable.is_set()
            and not protocol.close_sent
            and not protocol.transport.is_closing()
        )

    def write(self, payload: bytes) -> None:
        """Write one binary frame to the transport. Raises SocketClosed if the socket
        is closing."""
        protocol = self._protocol
        transport = protocol.transport
        if protocol.close_sent or transport.is_closing():
            raise SocketClosed("the socket is closed")
        if len(payload) <= JOIN_LIMIT:
            transport.write(_LastFrame.of(payload))
        else:
            transport.writelines((binary_frame_header(len(payload)), payload))

    async def send(self, payload: bytes) -> None:
        """`write`, after waiting while the transport is over its high-water mark (so
        the caller's outbox, which is capped, holds the backlog)."""
        writable = self._protocol.writable
        if not writable.is_set():
            await writable.wait()
        self.write(payload)
