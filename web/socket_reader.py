"""Binary messages handed straight from a socket's protocol to the app: the path every
update takes in.

Through ASGI, each message is an event dict on uvicorn's queue, the transport paused
after it and resumed when the app takes it (two system calls), and the app's task woken
through Starlette's receive wrappers. Here the protocol calls the app's handler from
`data_received`, as soon as a whole binary message is read. A message in one frame,
the kind every Yjs client sends, is even read here (`take`): websockets' parser, a
generator over a stream buffer, cost more than the room's handling of a small update.
Every other frame (text, control, fragmented, over the size limit, malformed) and all
that follows it in the read go to websockets, which parses them as before.

The handler returns how long to stop reading after a message (a rate limit: not reading
makes TCP push back on the sender). Messages already parsed from the same read are held
meanwhile (at most one read's worth) and handed over in order when the pause ends.
Everything else keeps uvicorn's path (its queue, read through ASGI `receive`): text
messages, the disconnect, and any binary message behind one of those; the protocol's
`receive` hands such an event to the app only once every message that arrived before it
has been handed over (`caught_up`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

# ASGI scope extension of a socket: its `FrameReader`.
FRAME_READER_EXTENSION = "blackboard.frame_reader"
# Takes one binary message; returns how long to stop reading after it (0: not at all).
MessageHandler = Callable[[bytes], float]
# Told why the handler raised; the reader has stopped handing messages over.
ErrorHandler = Callable[[Exception], None]

_FIN_BINARY = 0x82  # a whole binary message, no extension bits
_MASKED = 0x80
# A frame not whole in a read is kept here up to this size; a bigger one (an offline
# backlog's sync step 2) goes to websockets, whose buffer grows without copying it all
# again on every read.
KEEP_PARTIAL_BYTES = 64 * 1024


class FrameReader:
    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self._handle: MessageHandler | None = None
        self._on_error: ErrorHandler | None = None
        self._held: deque[bytes] = deque()  # parsed while paused, in arrival order
        self._pause: asyncio.TimerHandle | None = None
        self._partial = b""  # the start of a frame the last read did not hold whole
        self.caught_up = asyncio.Event()  # nothing held: every message is handed over
        self.caught_up.set()

    @property
    def paused(self) -> bool:
        return self._pause is not None

    def start(self, handle: MessageHandler, on_error: ErrorHandler) -> None:
        """Hand every binary message to `handle` from now on, beginning with those
        uvicorn queued before (up to the first other event, which stays queued)."""
        if self._handle is not None:
            raise RuntimeError("the socket's reader is already started")
        self._handle, self._on_error = handle, on_error
        protocol = self._protocol
        queue = protocol.queue
        events = [queue.get_nowait() for _ in range(queue.qsize())]
        while events and events[0].get("bytes") is not None:
            self._held.append(events.pop(0)["bytes"])  # type: ignore[typeddict-item]
        for event in events:
            queue.put_nowait(event)
        if queue.empty():
            protocol.read_paused = False  # uvicorn paused for what is now held here
        if self._held:
            self.caught_up.clear()
        self._hand_over_held()

    def stop(self) -> None:
        """Hand nothing more over (the app is done with the socket): drop what is held,
        cancel a pause and read again, so that the closing handshake is read."""
        self._handle = self._on_error = None
        self._held.clear()
        self.caught_up.set()
        if self._pause is not None:
            self._pause.cancel()
            self._pause = None
            self._resume_reading()

    def takes(self) -> bool:
        """Whether the protocol's next binary message is for the reader: it is started,
        and nothing waits in uvicorn's queue (an event the message must not overtake),
        and no close was sent (uvicorn drops what arrives after it)."""
        protocol = self._protocol
        return self._handle is not None and not protocol.close_sent and protocol.queue.empty()

    @property
    def mid_frame(self) -> bool:
        """Whether the last read ended inside a frame `take` keeps: its next bytes are
        this reader's to parse."""
        return bool(self._partial)

    def take(self, data: bytes, max_size: int | None) -> bytes:
        """Hand over the single-frame binary messages that `data` (read after what
        `mid_frame` kept) starts with, and keep a last one not yet whole; return the
        bytes from the first frame websockets must parse (b"": none). Called only
        between frames of websockets' parser, so that what it gets starts a frame."""
        if self._partial:
            data, self._partial = self._partial + data, b""
        at, end = 0, len(data)
        while at < end:
            if not self.takes() or data[at] != _FIN_BINARY:
                return data[at:]
            if end - at < 2:
                break
            size = data[at + 1]
            if not size & _MASKED:  # a client must mask: websockets fails the socket
                return data[at:]
            size &= 0x7F
            head = at + 2
            if size >= 126:
                width = 2 if size == 126 else 8
                if end - head < width:
                    break
                size = int.from_bytes(data[head : head + width], "big")
                head += width
            if max_size is not None and size > max_size:
                return data[at:]  # websockets closes with 1009, as for any message
            start = head + 4
            if start + size > end:
                if size > KEEP_PARTIAL_BYTES:
                    return data[at:]
                break
            self.receive(apply_mask(data[start : start + size], data[head:start]))
            at = start + size
        self._partial = data[at:]
        return b""

    def receive(self, message: bytes) -> None:
        """One whole binary message from the protocol (once `takes` said so)."""
        if self._pause is None and not self._held:
            self._hand(message)
            return
        self._held.append(message)
        self.caught_up.clear()

    def _hand(self, message: bytes) -> None:
        handle = self._handle
        assert handle is not None
        try:
            pause_s = handle(message)
        except Exception as exc:  # never into uvicorn's data_received
            on_error = self._on_error
            self.stop()
            if on_error is not None:
                on_error(exc)
            return
        if pause_s > 0:
            protocol = self._protocol
            self._pause = protocol.loop.call_later(pause_s, self._end_pause)
            if not protocol.read_paused:  # else already paused (and resumed by `receive`)
                protocol.transport.pause_reading()

    def _end_pause(self) -> None:
        self._pause = None
        self._hand_over_held()

    def _hand_over_held(self) -> None:
        held = self._held
        while held and self._pause is None and self._handle is not None:
            self._hand(held.popleft())
        if not held:
            self.caught_up.set()
        if self._pause is None:
            self._resume_reading()

    def _resume_reading(self) -> None:
        protocol = self._protocol
        if not protocol.read_paused:  # else uvicorn resumes once the app takes its event
            protocol.transport.resume_reading()
