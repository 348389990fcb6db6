"""Which updates hurry the group commit: one from a socket that asked for acks does, one
from a socket that did not waits for the longer interval (nobody waits for its commit),
until something awaited joins it or a flush waits for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pycrdt import Doc, Map

from blackboard.sync.room.connection import Connection
from blackboard.sync.wire.protocol import ack_message, sync_update
from tests.support.api import eventually, holds
from tests.support.live_room import LiveRoom, drained, live_room, memory_connection


def _edits(count: int) -> list[bytes]:
    """`count` updates of one client, each setting an extra field of `spec`."""
    doc = Doc(client_id=4242)
    spec = doc.get("spec", type=Map)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for n in range(count):
        spec[f"note_{n}"] = f"edit {n}"
    doc.unobserve(subscription)
    return updates


async def _second_waiting(live: LiveRoom, browser: Connection, first: bytes, second: bytes) -> None:
    """`first` from the unacked `browser` commits at once (after a quiet spell); `second`
    then waits out the 60 s, as nobody waits for it."""
    room, log = live.room, live.update_log
    room.receive(browser, sync_update(first))
    await eventually(holds(lambda: log.pending == 0))
    room.receive(browser, sync_update(second))
    await asyncio.sleep(0.3)
    assert log.pending == 1


async def test_an_acked_socket_hurries_the_commit_an_unacked_one_does_not(
    tmp_path: Path,
) -> None:
    async with live_room(tmp_path, unawaited_interval_s=60.0) as live:
        room, log = live.room, live.update_log
        browser = memory_connection("browser")
        agent = memory_connection("agent", wants_acks=True)
        room.join(browser)
        room.join(agent)
        first, second, third = _edits(3)
        await _second_waiting(live, browser, first, second)

        room.receive(agent, sync_update(third))  # the agent waits: the 10 ms apply
        await eventually(holds(lambda: log.pending == 0), timeout=5)
        await drained(agent)
        assert ack_message(1) in agent.channel.take()
        stored = await live.store.load(room.project_id)
        assert [entry.update for entry in stored.tail[-3:]] == [first, second, third]


async def test_a_flush_waits_for_unacked_updates_at_the_short_pace(tmp_path: Path) -> None:
    async with live_room(tmp_path, unawaited_interval_s=60.0) as live:
        room, log = live.room, live.update_log
        browser = memory_connection("browser")
        room.join(browser)
        await _second_waiting(live, browser, *_edits(2))
        # What an unload does: it waits for the room's updates, so they no longer wait
        # out the 60 s.
        await asyncio.wait_for(log.flush(room.project_id), 5)
        assert log.pending == 0
