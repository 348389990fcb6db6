"""One raw protocol client: connect, handshake, send prebuilt frames, time what arrives.

No Yjs document lives here: a client sends sync step 1 with an empty state vector, waits
for step 2 (the sync time), then only reads message heads and timestamp markers, so the
load generator spends as little as possible per message.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable

import websockets
from websockets.asyncio.client import ClientConnection

from bench.loadgen.updates import stamps
from bench.loadgen.wire import Framing, classify
from sync.protocol import (
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


class BenchClient:
    def __init__(self, url: str, framing: Framing, on_stamps: StampHandler | None = None) -> None:
        self.url = url
        self.framing = framing
        self.on_stamps = on_stamps
        self.ws: ClientConnection | None = None
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
        self._reader: asyncio.Task[None] | None = None

    @property
    def sync_time_ns(self) -> int:
        return self.sync_ns - self.connect_ns

    async def connect(self, *, sync: bool = True) -> None:
        """Open the socket and start the handshake; with `sync`, wait for step 2."""
        self.connect_ns = time.monotonic_ns()
        self.ws = await websockets.connect(
            self.url,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=CONNECT_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
            max_queue=None,
        )
        for frame in self.framing.opening():
            await self.ws.send(frame)
        await self.ws.send(self.framing.wrap(sync_step1(EMPTY_STATE_VECTOR)))
        self._reader = asyncio.create_task(self._read())
        if sync:
            await asyncio.wait_for(self.synced.wait(), CONNECT_TIMEOUT_S)

    async def send_update(self, update: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(self.framing.wrap(sync_update(update)))

    async def send_awareness(self) -> None:
        """This client's presence: a small state with a new clock each time (a heartbeat)."""
        assert self.ws is not None
        self._awareness_clock += 1
        state = json.dumps({"user": {"name": f"bench-{self.awareness_id}"}, "cursor": None})
        entry = AwarenessEntry(self.awareness_id, self._awareness_clock, state)
        await self.ws.send(self.framing.wrap(awareness_message(encode_awareness([entry]))))

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT_S)
            except (TimeoutError, websockets.WebSocketException, OSError):
                pass
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                now = time.monotonic_ns()
                if isinstance(frame, str):
                    continue
                self.bytes_in += len(frame)
                message = self.framing.unwrap(frame)
                incoming = classify(message)
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
        except websockets.ConnectionClosed:
            pass
        except OSError:
            pass
        finally:
            if self.ws is not None and self.ws.close_code is not None:
                self.close_code = self.ws.close_code
