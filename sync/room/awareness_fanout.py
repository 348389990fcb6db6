"""Presence fan-out, batched per tick: the room's accepted awareness entries go out at
most once per `tick_s`, one encoding for every subscriber.

Relaying each awareness message to every other client costs N² frames a second when N
clients send at 1 Hz (500 users: 250,000 frames/s). Batched, it costs N frames per tick
whatever the rate, and entries of one client within a tick collapse to the newest. A
quiet room pays no delay: a batch after a pause goes out on the next loop iteration. In a
big room the tick grows so that it sends at most `MAX_FRAMES_PER_S` presence frames a
second (1,500 clients: a batch every 0.3 s); the bytes are N² either way.
A client never receives its own entries back: a client that contributed to the batch
gets it without them (encoded once per contributor; past `MAX_EXCLUSION_PARTS` the
contributors get the full batch, whose entries of their own stock clients ignore, since
they carry a clock they already have).
A batch (or a snapshot) goes out in messages of at most `MESSAGE_BYTES` each, so a big
room's presence never reaches a client as one message over its size limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from blackboard.sync.room.connection import Connection
from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    awareness_message,
    encode_varbytes,
    encode_varuint,
)

AWARENESS_TICK_S = 0.05
MAX_FRAMES_PER_S = 5_000  # per room: past 250 clients the tick grows with the room
MAX_EXCLUSION_PARTS = 100_000  # contributors x entries encoded per tick, at most
MESSAGE_BYTES = 512 * 1024  # entries are at most 64 KiB (AwarenessLimits.state_bytes)


def _encode_entry(entry: AwarenessEntry) -> bytes:
    return (
        encode_varuint(entry.client_id)
        + encode_varuint(entry.clock)
        + encode_varbytes(entry.state_json.encode())
    )


def _messages(parts: list[bytes]) -> list[bytes]:
    """Awareness messages holding `parts` (encoded entries), each about `MESSAGE_BYTES`
    at most (an entry larger than that alone)."""
    messages: list[bytes] = []
    start, size = 0, 0
    for end, part in enumerate(parts):
        if size + len(part) > MESSAGE_BYTES and end > start:
            messages.append(_message(parts[start:end]))
            start, size = end, 0
        size += len(part)
    if start < len(parts):
        messages.append(_message(parts[start:]))
    return messages


def _message(parts: list[bytes]) -> bytes:
    return awareness_message(encode_varuint(len(parts)) + b"".join(parts))


def awareness_messages(entries: list[AwarenessEntry]) -> list[bytes]:
    return _messages([_encode_entry(entry) for entry in entries])


class AwarenessFanout:
    def __init__(self, connections: Collection[Connection], tick_s: float = AWARENESS_TICK_S):
        self._connections = connections
        self._tick_s = tick_s
        self._loop = asyncio.get_running_loop()
        # client id -> (entry, the connection that sent it, or None for the server/peers)
        self._pending: dict[int, tuple[AwarenessEntry, Connection | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")

    def queue(self, entries: list[AwarenessEntry], sender: Connection | None) -> None:
        """Relay `entries` (already accepted by the room) with the next batch."""
        for entry in entries:
            self._pending.pop(entry.client_id, None)  # keep arrival order: newest last
            self._pending[entry.client_id] = (entry, sender)
        if self._timer is None and self._pending:
            tick = max(self._tick_s, len(self._connections) / MAX_FRAMES_PER_S)
            delay = max(0.0, self._last_flush + tick - self._loop.time())
            self._timer = self._loop.call_later(delay, self.flush)

    def flush(self) -> None:
        self._timer = None
        self._last_flush = self._loop.time()
        pending, self._pending = self._pending, {}
        if not pending or not self._connections:
            return
        parts = [_encode_entry(entry) for entry, _ in pending.values()]
        senders = [sender for _, sender in pending.values()]
        everyone = _messages(parts)
        contributors = {s for s in senders if s is not None}
        exclude = len(contributors) * len(parts) <= MAX_EXCLUSION_PARTS
        for connection in list(self._connections):
            if exclude and connection in contributors:
                others = [p for p, s in zip(parts, senders, strict=True) if s is not connection]
                for message in _messages(others):
                    connection.send(message)
            else:
                for message in everyone:
                    connection.send(message)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
