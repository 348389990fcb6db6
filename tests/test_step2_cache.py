"""The SyncStep2 reply cache: shared by joiners, emptied by a change, bounded in bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Doc, Map

from blackboard.sync.room import fresh_join, step2_cache
from blackboard.sync.room.room import Room
from blackboard.sync.wire.protocol import SyncMessage, SyncType, decode_message, sync_step1
from blackboard.sync.wire.yjs_encoding import EMPTY_STATE_VECTOR
from tests.support.live_room import drained, live_room, memory_connection, recorded_encodes


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


async def _fresh_join(room: Room) -> list[SyncMessage]:
    """The sync messages a joiner with an empty Doc is sent, but the server's step 1."""
    connection = memory_connection()
    room.join(connection)
    room.receive(connection, sync_step1(EMPTY_STATE_VECTOR))
    await drained(connection)
    messages = map(decode_message, connection.channel.take())
    return [m for m in messages if isinstance(m, SyncMessage) and m.kind != SyncType.STEP1]


def _shots(doc: Doc) -> dict[str, object]:
    return doc.get("shots", type=Map).to_py()


async def test_a_fresh_joiner_of_a_big_document_gets_the_changes_then_a_kept_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding a big document holds the GIL (every room waits): after a change a fresh
    joiner gets what changed since the last encoding, then that encoding, and has the
    whole document when its step 2 arrives."""
    async with live_room(tmp_path) as live:
        room = live.room

        def big(doc: Doc) -> None:
            for i in range(300):
                _put(doc, f"S{i}", {"notes": "x" * 1000})

        room.server_write(big)
        (base,) = await _fresh_join(room)  # an encoding: kept across changes
        assert base.kind == SyncType.STEP2 and len(base.payload) > fresh_join.MIN_BYTES
        room.server_write(lambda doc: _put(doc, "S1", {"title": "replaced"}))
        room.server_write(lambda doc: doc.get("shots", type=Map).pop("S2"))
        room.server_write(lambda doc: doc.get("shots", type=Map)["S3"].update({"notes": "new"}))

        encodes = recorded_encodes(monkeypatch, room.doc)
        for _ in range(2):  # the second joiner gets the same frames
            changes, step2 = await _fresh_join(room)
            assert (changes.kind, step2.kind) == (SyncType.UPDATE, SyncType.STEP2)
            assert step2.payload == base.payload
            joiner = Doc()
            joiner.apply_update(changes.payload)  # waits for the encoding it builds on
            assert _shots(joiner) == {}
            joiner.apply_update(step2.payload)
            assert _shots(joiner) == _shots(room.doc)
            assert "S2" not in _shots(joiner) and _shots(joiner)["S3"]["notes"] == "new"
        assert encodes == [room.fresh_join._state_vector]  # the changes, once; never the whole

        # Changes outgrowing a share of the encoding: a fresh encoding, kept as the base.
        room.server_write(lambda doc: _put(doc, "S4", {"notes": "y" * 200_000}))
        encodes.clear()
        (step2,) = await _fresh_join(room)
        assert step2.kind == SyncType.STEP2 and EMPTY_STATE_VECTOR in encodes
        joiner = Doc()
        joiner.apply_update(step2.payload)
        assert _shots(joiner) == _shots(room.doc)
        encodes.clear()
        assert [m.payload for m in await _fresh_join(room)] == [step2.payload] and not encodes


async def test_a_small_document_is_encoded_for_each_fresh_joiner_after_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below `MIN_BYTES` the encoding costs less than keeping it: the reply is exact."""
    async with live_room(tmp_path) as live:
        room = live.room
        room.server_write(lambda doc: _put(doc, "S1", {"title": "small"}))
        await _fresh_join(room)
        room.server_write(lambda doc: _put(doc, "S2", {"title": "more"}))
        encodes = recorded_encodes(monkeypatch, room.doc)
        (step2,) = await _fresh_join(room)
        assert step2.kind == SyncType.STEP2 and encodes == [EMPTY_STATE_VECTOR]
