"""One raw protocol client: connect, handshake, send prebuilt frames, time what arrives.

The WebSocket layer is `websockets`' sans-I/O `ClientProtocol` (no compression) driven
from a plain asyncio Protocol: frames are handled synchronously as bytes arrive, with no
per-message task switch. That keeps the load generator near 5 µs per received message,
so with thousands of observers it is less often the bottleneck it is meant to measure.

No Yjs document lives here: a client sends sync step 1 with an empty state vector, waits
for step 2 (the sync time), then only reads message heads and timestamp markers.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from bench.loadgen.updates import stamps
from bench.loadgen.wire import Framing, classify
from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    awareness_message,
    encode_awareness,
    sync_step1,
    sync_update,
)

EMPTY_STATE_VECTOR = b"\x00"
CONNECT_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 5.0

# Called with the (tag, send ns) markers of one received update and the receive time.
StampHandler = Callable[[list[tuple[int, int]], int], None]


class ConnectFailed(Exception):
    pass


class _Wire(asyncio.Protocol):
    """Bytes in and out of one socket, through the sans-I/O WebSocket protocol."""

    def __init__(self, client: BenchClient, protocol: ClientProtocol) -> None:
        self.client = client
        self.ws = protocol
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.ws.send_request(self.ws.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                self._frame(event, now)
            elif isinstance(event, Response) and not self.opened.done():
                if self.ws.handshake_exc is not None:
                    self.opened.set_exception(ConnectFailed(str(self.ws.handshake_exc)))
                else:
                    self.opened.set_result(None)
        self.flush()  # pongs, close replies

    def _frame(self, frame: Frame, now: int) -> None:
        if frame.opcode in (Opcode.BINARY, Opcode.CONT):
            if not frame.fin:
                self._fragments.append(frame.data)
                return
            data = frame.data
            if self._fragments:
                data = b"".join([*self._fragments, data])
                self._fragments.clear()
            self.client.received(data, now)
        elif frame.opcode is Opcode.CLOSE:
            self.client.close_code = Close.parse(frame.data).code if frame.data else 1005

    def flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:  # the protocol asks for end of stream
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.close_code is None:
            self.client.close_code = self.ws.close_code or 1006
        if not self.opened.done():
            self.opened.set_exception(ConnectFailed("connection lost during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)


class BenchClient:
    def __init__(self, url: str, framing: Framing, on_stamps: StampHandler | None = None) -> None:
        self.url = url
        self.framing = framing
        self.on_stamps = on_stamps
        self.synced = asyncio.Event()
        self.connect_ns = 0  # when the connection attempt started
        self.sync_ns = 0  # when sync step 2 arrived
        self.step2_bytes = 0
        self.updates_in = 0
        self.awareness_in = 0
        self.bytes_in = 0
        self.close_code: int | None = None
        self.awareness_id = random.randrange(1, 2**31)
        self._awareness_clock = 0
        self._wire: _Wire | None = None

    @property
    def sync_time_ns(self) -> int:
        return self.sync_ns - self.connect_ns

    @property
    def open(self) -> bool:
        return self._wire is not None and self._wire.ws.state is State.OPEN

    async def connect(self, *, sync: bool = True) -> None:
        """Open the socket and start the handshake; with `sync`, wait for step 2."""
        self.connect_ns = time.monotonic_ns()
        uri = parse_uri(self.url)
        protocol = ClientProtocol(uri, max_size=None)  # no extensions: no compression
        loop = asyncio.get_running_loop()
        _, wire = await asyncio.wait_for(
            loop.create_connection(lambda: _Wire(self, protocol), uri.host, uri.port),
            CONNECT_TIMEOUT_S,
        )
        self._wire = wire
        await asyncio.wait_for(wire.opened, CONNECT_TIMEOUT_S)
        for frame in self.framing.opening():
            self._send(frame)
        self._send(self.framing.wrap(sync_step1(EMPTY_STATE_VECTOR)))
        if sync:
            await asyncio.wait_for(self.synced.wait(), CONNECT_TIMEOUT_S)

    def _send(self, frame: bytes) -> None:
        wire = self._wire
        if wire is None or wire.ws.state is not State.OPEN:
            raise ConnectionError("the connection is closed")
        wire.ws.send_binary(frame)
        wire.flush()

    async def send_update(self, update: bytes) -> None:
        self._send(self.framing.wrap(sync_update(update)))

    async def send_awareness(self) -> None:
        """This client's presence: a small state with a new clock each time (a heartbeat)."""
        self._awareness_clock += 1
        state = json.dumps({"user": {"name": f"bench-{self.awareness_id}"}, "cursor": None})
        entry = AwarenessEntry(self.awareness_id, self._awareness_clock, state)
        self._send(self.framing.wrap(awareness_message(encode_awareness([entry]))))

    async def close(self) -> None:
        wire = self._wire
        if wire is None or wire.transport is None:
            return
        if wire.ws.state is State.OPEN:
            wire.ws.send_close(1000)
            wire.flush()
        try:
            await asyncio.wait_for(asyncio.shield(wire.lost), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectFailed):
            pass
        wire.transport.close()

    def received(self, frame: bytes, now: int) -> None:
        self.bytes_in += len(frame)
        incoming = classify(self.framing.unwrap(frame))
        if incoming.kind == "update":
            self.updates_in += 1
            if self.on_stamps is not None:
                found = stamps(incoming.payload)
                if found:
                    self.on_stamps(found, now)
        elif incoming.kind == "awareness":
            self.awareness_in += 1
        elif incoming.kind == "step2" and not self.synced.is_set():
            self.sync_ns = now
            self.step2_bytes = len(incoming.payload)
            self.synced.set()
