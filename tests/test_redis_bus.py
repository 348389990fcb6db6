"""The Redis bus (sync/cluster/redis_bus.py) against a real, private redis-server that the
tests kill and restart, and the peer message codec (sync/wire/peer_messages.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from blackboard.sync.cluster.redis_bus import RedisBus, RedisUnavailable
from blackboard.sync.wire import peer_messages
from blackboard.sync.wire.protocol import ProtocolError
from tests.support.api import eventually
from tests.support.backends import redis_prefix
from tests.support.private_redis import PrivateRedis


@pytest.fixture
async def redis_server() -> AsyncIterator[PrivateRedis]:
    server = await PrivateRedis().start()
    try:
        yield server
    finally:
        await server.kill()


class Listener:
    def __init__(self, bus: RedisBus) -> None:
        self.received: list[bytes] = []
        self.connected = 0
        self.disconnected = 0
        bus.on_message = lambda channel, data: self.received.append(data)
        bus.on_connected = self._up
        bus.on_disconnected = self._down

    def _up(self) -> None:
        self.connected += 1

    def _down(self) -> None:
        self.disconnected += 1


async def test_publish_subscribe_survives_a_redis_restart(redis_server: PrivateRedis) -> None:
    prefix = redis_prefix()
    sender = RedisBus(redis_server.url, prefix, timeout_s=1)
    receiver = RedisBus(redis_server.url, prefix, timeout_s=1)
    listener = Listener(receiver)
    channel = receiver.channel("doc:film")
    receiver.subscribe(channel)
    await sender.start()
    await receiver.start()
    try:
        await eventually(lambda: _true(sender.healthy and receiver.healthy and listener.connected))
        for i in range(3):
            sender.publish(channel, b"m%d" % i)
        await eventually(lambda: _equal(listener.received, [b"m0", b"m1", b"m2"]))

        # Several pooled command connections (presence writes, heartbeats run at once),
        # all of which the restart below leaves dead.
        await asyncio.gather(*(sender.command("PING") for _ in range(5)))
        await redis_server.kill()
        await eventually(lambda: _true(not receiver.healthy and listener.disconnected == 1))
        assert receiver.state.startswith("down")
        await eventually(lambda: _true(not sender.healthy))
        dropped = sender.dropped
        sender.publish(channel, b"lost")  # Redis is down: dropped and counted, never raised
        assert sender.dropped == dropped + 1
        with pytest.raises(RedisUnavailable):
            await sender.command("PING")

        await redis_server.start()
        # Back by itself, subscriptions included, and it says so (callers catch up then).
        await eventually(lambda: _true(receiver.healthy and listener.connected == 2))
        await eventually(lambda: _true(sender.healthy))
        dropped = sender.dropped
        for i in range(5):  # not one lost on a dead pooled connection
            sender.publish(channel, b"again%d" % i)
            await asyncio.sleep(0)  # one loop turn: the publishes interleave with the bus
        await eventually(lambda: _equal(listener.received[-5:], [b"again%d" % i for i in range(5)]))
        assert sender.dropped == dropped
        assert b"lost" not in listener.received
        assert await sender.command("PING")
    finally:
        await sender.stop()
        await receiver.stop()


async def test_subscriptions_follow_the_rooms(redis_server: PrivateRedis) -> None:
    prefix = redis_prefix()
    bus = RedisBus(redis_server.url, prefix, timeout_s=1)
    listener = Listener(bus)
    subscribed: list[bytes] = []
    bus.on_subscribed = subscribed.append
    await bus.start()
    try:
        await eventually(lambda: _true(bus.healthy))
        one, two = bus.channel("doc:one"), bus.channel("doc:two")
        bus.subscribe(one)
        bus.subscribe(two)
        await eventually(lambda: _equal(sorted(subscribed), sorted([one, two])))
        bus.unsubscribe(one)
        client = redis_server.client()
        try:
            # Redis itself says the bus has left `one` (and still listens on `two`).
            async def left_one() -> None:
                assert await client.pubsub_numsub(one, two) == [(one, 0), (two, 1)]

            await eventually(left_one)
            await client.publish(one, b"to one")
            await client.publish(two, b"to two")
        finally:
            await client.aclose()
        await eventually(lambda: _equal(listener.received, [b"to two"]))
    finally:
        await bus.stop()


def test_peer_messages_round_trip() -> None:
    encoded = peer_messages.encode_update("host-1", 7, "ana", b"\x01\x02", 1_700_000_000_123_456)
    update = peer_messages.decode(encoded)
    assert (
        update.kind,
        update.instance,
        update.counter,
        update.actor,
        update.payload,
        update.sent_at_us,
    ) == (peer_messages.UPDATE, "host-1", 7, "ana", b"\x01\x02", 1_700_000_000_123_456)
    awareness = peer_messages.decode(peer_messages.encode_awareness("host-2", b"\x00"))
    assert (awareness.kind, awareness.instance, awareness.payload) == (
        peer_messages.AWARENESS,
        "host-2",
        b"\x00",
    )
    snapshot = peer_messages.decode(peer_messages.encode_snapshot("host-2", b"\x00"))
    assert snapshot.kind == peer_messages.SNAPSHOT
    query = peer_messages.decode(peer_messages.encode_query("host-3"))
    assert (query.kind, query.instance) == (peer_messages.QUERY, "host-3")


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"z\x00",
        b"u",
        b"u\x05ab",
        b"u\x01a",
        b"u\x01a\x80",
        b"a\xff\xff\xff\xff\xff\xff\xff\xff",
    ],
)
def test_malformed_peer_messages_are_refused(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        peer_messages.decode(garbage)


def _true(value: object) -> None:
    assert value


def _equal(actual: object, expected: object) -> None:
    assert actual == expected
