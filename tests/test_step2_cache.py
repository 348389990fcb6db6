"""The SyncStep2 reply cache: shared by joiners, emptied by a change, bounded in bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Doc, Map

from blackboard.sync.room import step2_cache
from blackboard.sync.wire.protocol import SyncMessage, SyncType, decode_message, sync_step1
from tests.support.live_room import drained, live_room, memory_connection


def _put(doc: Doc, shot_id: str, fields: dict[str, str]) -> None:
    doc.get("shots", type=Map)[shot_id] = Map(fields)


def _state_vectors(count: int) -> list[bytes]:
    """Distinct state vectors of clients that each wrote a little elsewhere."""
    vectors = []
    for i in range(count):
        doc = Doc()
        doc.get("notes", type=Map)[f"k{i}"] = i
        vectors.append(doc.get_state())
    return vectors


async def test_replies_are_shared_invalidated_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_room(tmp_path) as live:
        room = live.room
        room.server_write(lambda doc: _put(doc, "S1", {"notes": "x" * 4000}))
        connection = memory_connection()
        room.join(connection)
        room.receive(connection, sync_step1(b"\x00"))
        room.receive(connection, sync_step1(b"\x00"))
        assert len(room.step2_cache) == 1  # two joiners, one encoding

        monkeypatch.setattr(step2_cache, "STEP2_CACHE_BYTES", 10_000)
        for vector in _state_vectors(6):
            room.receive(connection, sync_step1(vector))
            assert room.step2_cache.size <= 10_000
        await drained(connection)
        replies = [decode_message(f) for f in connection.channel.take()]
        steps = [m for m in replies if isinstance(m, SyncMessage) and m.kind == SyncType.STEP2]
        assert len(steps) == 8  # every ask answered, cached or not

        room.receive(connection, sync_step1(b"\x00"))
        assert len(room.step2_cache) > 0
        room.server_write(lambda doc: _put(doc, "S2", {"title": "new"}))
        assert len(room.step2_cache) == 0  # any change empties it


async def test_a_room_loaded_from_a_snapshot_alone_answers_a_fresh_joiner_with_it(
    tmp_path: Path,
) -> None:
    """After an unload compacted the room, its snapshot is the document's encoding: the
    load reuses it for a fresh joiner instead of encoding the document again."""
    async with live_room(tmp_path) as live:
        stored = await live.store.load("film")
        assert stored.tail  # a new project: its first update is a log row
        assert len(live.room.step2_cache) == 0  # so nothing is at hand before a join
        live.room.server_write(lambda doc: _put(doc, "S1", {"title": "kept"}))
        room = await live.reload()  # unloading compacts: a snapshot, no tail
        stored = await live.store.load("film")
        assert stored.snapshot is not None and not stored.tail
        assert len(room.step2_cache) == 1
        connection = memory_connection()
        room.join(connection)
        room.receive(connection, sync_step1(b"\x00"))
        await drained(connection)
        reply = decode_message(connection.channel.take()[-1])
        assert isinstance(reply, SyncMessage) and reply.kind == SyncType.STEP2
        joiner = Doc()
        joiner.apply_update(reply.payload)
        assert joiner.get("shots", type=Map).to_py() == {"S1": {"title": "kept"}}
