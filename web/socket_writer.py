"""Binary frames written straight to a socket's transport: the path every broadcast takes.

Through ASGI, each message to each recipient is an event dict, three awaited coroutines
(Starlette, its exception wrapper, uvicorn), a websockets `Frame` serialized on its own
and a `transport.write` (a system call) of its own. Here a message costs a frame header
(a table lookup below 126 bytes) next to the payload the room encoded once for every
recipient, and a socket's frames of one loop tick go out in one write.

Only for sockets that negotiated no extension (the server offers none: per-message
deflate would compress per socket). The closing handshake stays with uvicorn; frames
still waiting when the socket closes are dropped, as ASGI sends to a closed socket fail.
"""

from __future__ import annotations

import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# ASGI scope extension of a socket: its `FrameWriter`.
FRAME_WRITER_EXTENSION = "blackboard.frame_writer"
_FIN_BINARY = 0x82
_SMALL_HEADERS = [bytes((_FIN_BINARY, n)) for n in range(126)]
WRITELINES_BYTES = 1 << 20  # a payload this big is not joined with the other frames


def binary_frame_header(size: int) -> bytes:
    """The header of an unmasked, unfragmented binary frame of `size` bytes (RFC 6455)."""
    if size < 126:
        return _SMALL_HEADERS[size]
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, size)
    return struct.pack("!BBQ", _FIN_BINARY, 127, size)


class SocketClosed(ConnectionError):
    """The socket is closed or closing: nothing more can be sent on it."""


class FrameWriter:
    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self._pending: list[bytes] = []  # header, payload, header, payload, ...

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
        """Queue one binary frame for the end of this loop tick. Raises SocketClosed if
        the socket is closing."""
        pending = self._pending
        if not pending:  # the first frame of this tick: check once, flush once
            protocol = self._protocol
            if protocol.close_sent or protocol.transport.is_closing():
                raise SocketClosed("the socket is closed")
            protocol.loop.call_soon(self.flush)
        pending += (binary_frame_header(len(payload)), payload)

    async def send(self, payload: bytes) -> None:
        """`write`, after waiting while the transport is over its high-water mark (so
        the caller's outbox, which is capped, holds the backlog)."""
        writable = self._protocol.writable
        if not writable.is_set():
            await writable.wait()
        self.write(payload)

    def flush(self) -> None:
        """Write the queued frames now (before a close frame, which must come last)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        protocol = self._protocol
        # A close sent or received since (uvicorn's closing handshake) drops them.
        if protocol.close_sent or protocol.transport.is_closing():
            return
        if max(map(len, pending)) >= WRITELINES_BYTES:
            # A whole document (a joiner's step 2): joining would copy it on the loop, a
            # stall of 10-40 ms for 20 MB; uvloop writes the pieces as they are.
            protocol.transport.writelines(pending)
        else:
            protocol.transport.write(b"".join(pending))
