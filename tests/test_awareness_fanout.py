"""Presence batched per tick: one message per subscriber per tick, never the sender's own
entries back, newest entry per client, a quiet room served at once."""

from __future__ import annotations

import asyncio

from blackboard.sync.room.awareness_fanout import AwarenessFanout
from blackboard.sync.room.connection import Connection
from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    decode_awareness,
    decode_message,
)
from tests.support.api import eventually


class Recorder:
    """A channel that keeps what it is sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.frames.append(data)

    async def close(self, code: int, reason: str) -> None:
        pass


def connection() -> tuple[Connection, Recorder]:
    channel = Recorder()
    conn = Connection(
        channel,
        project_id="p",
        actor="a",
        can_write=True,
        wants_acks=False,
        max_queue_bytes=1 << 20,
    )
    return conn, channel


def entries_of(channel: Recorder) -> list[list[tuple[int, int]]]:
    """Per received message: its (client id, clock) entries."""
    out = []
    for frame in channel.frames:
        message = decode_message(frame)
        assert isinstance(message, AwarenessMessage)
        out.append([(e.client_id, e.clock) for e in decode_awareness(message.payload)])
    return out


def entry(client_id: int, clock: int) -> AwarenessEntry:
    return AwarenessEntry(client_id, clock, f'{{"c":{clock}}}')


async def settle(seconds: float = 0.0) -> None:
    """Let `seconds` pass (a window in which nothing may be sent), then a few loop turns
    (for the sender tasks to drain)."""
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


def _equal(actual: object, expected: object) -> None:
    assert actual == expected


def _batch_sent(ca: Recorder, cb: Recorder, cw: Recorder) -> None:
    assert entries_of(cw)[1:] == [[(2, 1), (1, 3)]]  # one message; client 1 only at clock 3
    assert entries_of(ca) == [[(2, 1)]]  # without its own entries
    assert entries_of(cb)[1:] == [[(1, 3)]]


async def test_a_tick_of_presence_is_one_message_per_subscriber() -> None:
    (a, ca), (b, cb), (watcher, cw) = connection(), connection(), connection()
    fanout = AwarenessFanout({a, b, watcher}, tick_s=0.2)
    fanout.queue([entry(1, 1)], a)  # a quiet room: goes out on the next loop turn
    await settle()
    assert entries_of(cw) == [[(1, 1)]]
    assert entries_of(cb) == [[(1, 1)]]
    assert entries_of(ca) == []  # never its own entry back
    # Within the next tick: several messages, one client twice.
    fanout.queue([entry(1, 2)], a)
    fanout.queue([entry(2, 1)], b)
    fanout.queue([entry(1, 3)], a)
    await settle()
    assert len(cw.frames) == 1  # held until the tick is over
    await eventually(lambda: _batch_sent(ca, cb, cw), timeout=0.3)  # at the tick's end
    fanout.close()


async def test_server_entries_go_to_everyone_and_close_drops_the_rest() -> None:
    (a, ca), (b, cb) = connection(), connection()
    fanout = AwarenessFanout({a, b}, tick_s=0.2)
    fanout.queue([entry(9, 4)], None)  # e.g. a removal, or presence from another instance
    await settle()
    assert entries_of(ca) == entries_of(cb) == [[(9, 4)]]
    fanout.queue([entry(9, 5)], None)
    fanout.close()
    await settle(0.3)
    assert entries_of(ca) == [[(9, 4)]]  # nothing after close


async def test_a_sole_contributor_gets_nothing() -> None:
    (a, ca), (b, cb) = connection(), connection()
    fanout = AwarenessFanout({a, b}, tick_s=0.05)
    fanout.queue([entry(1, 1), entry(2, 1)], a)  # one connection may hold several client ids
    await eventually(lambda: _equal(entries_of(cb), [[(1, 1), (2, 1)]]), timeout=0.1)
    await settle()
    assert entries_of(ca) == []
    fanout.close()


async def test_a_big_room_gets_a_longer_tick() -> None:
    crowd = [connection() for _ in range(1000)]  # 1,000 / MAX_FRAMES_PER_S: a 0.2 s tick
    (_, first), (_, last) = crowd[0], crowd[-1]
    fanout = AwarenessFanout({conn for conn, _ in crowd}, tick_s=0.01)
    fanout.queue([entry(1, 1)], None)
    await settle()
    assert entries_of(first) == [[(1, 1)]]
    fanout.queue([entry(1, 2)], None)
    await settle(0.1)
    assert len(last.frames) == 1  # not yet: the tick is longer than 0.01 s here
    await eventually(lambda: _equal(entries_of(last), [[(1, 1)], [(1, 2)]]), timeout=0.2)
    fanout.close()
