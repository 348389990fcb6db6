"""Loading a big document lets the other rooms run: the whole-document work happens off
the event loop (`sync.room.load_plan`) and the loop applies it a chunk at a time, to the
same document, shadow and lattice index a whole-document load gives."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from blackboard.persistence.compaction import CompactionResult, compact
from blackboard.persistence.compaction_worker import CompactionWorker
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.replay import CorruptDocument, Folded, Parts, fold, replay
from blackboard.persistence.update_log import UpdateLog
from blackboard.schemas.views import doc_to_json
from blackboard.sync.room import rooms as room_manager_module
from blackboard.sync.room.load_plan import CHUNK_BYTES, SMALL_ROWS, LoadPlan, plan_in_thread
from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.room.rooms import COMPACT_ROWS_PER_BYTES, RoomManager, RoomPolicy
from blackboard.sync.rules.lattice import LatticeTracker
from blackboard.sync.wire.protocol import SyncMessage, SyncType, decode_message, sync_step1
from blackboard.sync.wire.yjs_encoding import EMPTY_STATE_VECTOR
from tests.support.api import eventually
from tests.support.held_update import log_with_a_held_update
from tests.support.live_room import drained, memory_connection, recorded_encodes
from tests.test_compaction_fencing import Project

SHOTS = 6000  # about 2 MB: 30 chunks


# The load path is the same on both backends: the embedded one is enough here.
pytestmark = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


@pytest.fixture
async def rooms(store: DocumentStore) -> AsyncIterator[RoomManager]:
    update_log = UpdateLog(store)
    update_log.start()
    rooms = RoomManager(store, update_log, CompactionWorker(store, timedelta(days=1)), RoomPolicy())
    try:
        yield rooms
    finally:
        await rooms.close()
        await update_log.stop(10)


async def big_project(store: DocumentStore, shots: int = SHOTS) -> Project:
    """A project of about 2 MB (by default) compacted to one snapshot; its shots have a
    status."""
    project = Project(store)
    await project.create()
    shots_map = project.doc.get("shots", type=Map)
    with project.doc.transaction():
        for i in range(shots):
            status = ("draft", "review", "approved")[i % 3]
            shots_map[f"S{i}"] = Map({"status": status, "revision": 1.0, "prompt": "x" * 300})
    await project.write(0, batch=10)
    await compact(store, "film", timedelta(days=1))
    return project


async def test_a_big_document_loads_a_chunk_at_a_time(
    store: DocumentStore, rooms: RoomManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = await big_project(store)
    stored = await store.load("film")
    assert stored.snapshot is not None and not stored.tail
    assert len(stored.snapshot.state) > 20 * CHUNK_BYTES

    # Bytes applied on the event loop's thread since the loop last ran something else.
    loop_thread = threading.get_ident()
    applied = 0
    most = 0
    apply_update = Doc.apply_update

    def counting(doc: Doc, update: bytes) -> None:
        nonlocal applied, most
        if threading.get_ident() == loop_thread:
            applied += len(update)
            most = max(most, applied)
        apply_update(doc, update)

    async def tick() -> None:
        nonlocal applied
        while True:
            applied = 0
            await asyncio.sleep(0)

    monkeypatch.setattr(Doc, "apply_update", counting)
    ticker = asyncio.create_task(tick())
    try:
        room = await rooms.get("film")
    finally:
        ticker.cancel()
    # The live Doc and its shadow get one chunk each between two turns of the loop (a
    # chunk: CHUNK_BYTES and its header), never the whole document.
    assert 0 < most <= 2 * (CHUNK_BYTES + 64)

    assert doc_to_json(room.doc) == doc_to_json(project.doc)
    whole = LatticeTracker.of_document(replay(stored), stored.status_epochs)
    for i in range(SHOTS):
        assert room.rules.lattice.target("shots", f"S{i}") == whole.target("shots", f"S{i}")
    assert len(room.step2_cache) == 1  # the snapshot is at hand for a fresh joiner
    assert room.step2_cache.get(EMPTY_STATE_VECTOR) is not None


async def test_a_fresh_joiners_step_2_is_framed_off_the_loop(
    store: DocumentStore, rooms: RoomManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Framing a 20 MB snapshot as a step 2 copies it: in a thread the copy lets go of the
    GIL, on the loop it held every room for 20-30 ms."""
    framed_in: list[threading.Thread] = []
    frame = room_manager_module.sync_step2

    def recording(update: bytes) -> bytes:
        framed_in.append(threading.current_thread())
        return frame(update)

    monkeypatch.setattr(room_manager_module, "sync_step2", recording)
    await big_project(store)
    room = await rooms.get("film")
    assert room.step2_cache.get(EMPTY_STATE_VECTOR) is not None
    assert framed_in and threading.main_thread() not in framed_in


async def test_a_big_snapshot_and_its_tail_load_to_the_same_document(
    store: DocumentStore, rooms: RoomManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tail is replayed onto the snapshot off the loop; a bad row still fails the load
    by name."""
    project = await big_project(store)
    await project.write(200)
    stored = await store.load("film")
    assert stored.snapshot is not None and len(stored.tail) == 200
    room = await rooms.get("film")
    assert doc_to_json(room.doc) == doc_to_json(project.doc)
    assert len(room.step2_cache) == 0  # the document's encoding is not the snapshot

    # The load's encoding answers a fresh joiner: the live document is not encoded again.
    encodes = recorded_encodes(monkeypatch, room.doc)
    connection = memory_connection()
    room.join(connection)
    room.receive(connection, sync_step1(EMPTY_STATE_VECTOR))
    await drained(connection)
    assert encodes == []
    joiner = Doc()
    for message in map(decode_message, connection.channel.take()):
        if isinstance(message, SyncMessage) and message.kind == SyncType.STEP2:
            joiner.apply_update(message.payload)
    assert doc_to_json(joiner) == doc_to_json(project.doc)
    monkeypatch.undo()

    room.closing = True  # dropped on the next `get`: load again, from storage
    await store.append([PendingAppend("film", b"\xff\x00\xff", "vandal")])
    with pytest.raises(CorruptDocument, match="log row 203 does not apply"):
        await rooms.get("film")


async def test_a_long_log_without_a_snapshot_loads_to_the_same_document(
    store: DocumentStore, rooms: RoomManager
) -> None:
    """No snapshot: the child replays the rows alone and hands the encoding back."""
    project = Project(store)
    await project.create()
    await project.write(2 * SMALL_ROWS)
    stored = await store.load("film")
    assert stored.snapshot is None and len(stored.tail) > SMALL_ROWS
    room = await rooms.get("film")
    assert doc_to_json(room.doc) == doc_to_json(project.doc)


@pytest.mark.parametrize("rows_after", [0, 100])  # loaded on the loop, or in the child
# The held update is the editor's first (its clocks start at 0), or follows one stored.
@pytest.mark.parametrize("editor_wrote_before", [False, True])
async def test_an_update_held_for_a_missing_one_survives_a_reload(
    store: DocumentStore, rooms: RoomManager, rows_after: int, editor_wrote_before: bool
) -> None:
    """yrs keeps aside the structs of an update whose dependencies it has not seen, and
    a document's encoding leaves them out; loading from the log keeps them waiting, so
    they show once the missing update arrives, as they would have without the reload."""
    missing = await log_with_a_held_update(
        store, editor_wrote_before=editor_wrote_before, rows_after=rows_after
    )

    room = await rooms.get("film")
    assert "S900" not in doc_to_json(room.doc)["shots"]
    room.apply_update(missing, Origin(Source.CLIENT, "author"))
    assert doc_to_json(room.doc)["shots"]["S900"] == {"order": 900.0, "title": "held"}


async def test_a_join_during_an_unload_waits_for_the_flush_not_the_compaction(
    store: DocumentStore,
) -> None:
    """Compaction at unload runs in a child at a lower priority and can take seconds on a
    busy machine; a client reopening the project meanwhile gets it at once."""
    project = Project(store)
    await project.create()
    await project.write(5)
    folding = asyncio.Event()
    release = asyncio.Event()

    async def slow_folder(updates: Parts) -> Folded:
        folding.set()
        await asyncio.wait_for(release.wait(), 10)
        return fold(updates)

    update_log = UpdateLog(store)
    update_log.start()
    compactor = CompactionWorker(store, timedelta(days=1), folder=slow_folder)
    rooms = RoomManager(store, update_log, compactor, RoomPolicy())
    try:
        await rooms.get("film")
        unloading = asyncio.create_task(rooms.unload("film"))
        await asyncio.wait_for(folding.wait(), 10)  # compacting, held until released
        room = await asyncio.wait_for(rooms.get("film"), 5)
        assert doc_to_json(room.doc) == doc_to_json(project.doc)
        assert not unloading.done()
        release.set()
        await asyncio.wait_for(unloading, 10)  # the compaction finished too
        assert (await store.load("film")).snapshot is not None
    finally:
        release.set()
        await rooms.close()
        await update_log.stop(10)


async def test_a_load_whose_planner_fails_or_hangs_serves_nothing_and_the_next_one_loads(
    store: DocumentStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The DocWorker's child dying or hanging fails that load alone: no room is served,
    the scratch file is removed, and the next join loads the document."""
    project = await big_project(store)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def scratch_removed() -> None:
        assert os.listdir(scratch) == []

    async def hanging(path: str, snapshot: str | None, tail: Parts) -> LoadPlan:
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async def dying(path: str, snapshot: str | None, tail: Parts) -> LoadPlan:
        raise BrokenProcessPool("the child died")

    update_log = UpdateLog(store)
    update_log.start()
    compactor = CompactionWorker(store, timedelta(days=1))
    policy = RoomPolicy(load_timeout_s=0.5)
    stuck = RoomManager(store, update_log, compactor, policy, planner=hanging)
    rooms = RoomManager(store, update_log, compactor, policy, planner=dying)
    try:
        with caplog.at_level(logging.WARNING):
            with pytest.raises(TimeoutError):
                await stuck.get("film")
            assert "film" not in stuck.rooms
            await eventually(scratch_removed, timeout=5)  # even after a timeout
            gc.collect()  # where asyncio would report a load task's unretrieved failure
        assert "never retrieved" not in caplog.text
        assert "room film: load failed: TimeoutError()" in caplog.text

        with pytest.raises(BrokenProcessPool):
            await rooms.get("film")
        assert "film" not in rooms.rooms
        scratch_removed()
        rooms.planner = plan_in_thread
        rooms.policy = RoomPolicy()
        room = await rooms.get("film")
        assert doc_to_json(room.doc) == doc_to_json(project.doc)
        scratch_removed()
    finally:
        await stuck.close()
        await rooms.close()
        await update_log.stop(10)


async def test_compaction_waits_for_rows_in_proportion_to_the_document(
    store: DocumentStore,
) -> None:
    """Compaction rewrites the whole document: a big one is compacted after
    `compact_after_rows` tail rows per MiB of it, not after as many as a small one, and
    the size a compaction stores sets the next threshold. (A request resets the room's
    tail count, so the count shows whether one was made.)"""
    await big_project(store, shots=2 * SHOTS)  # about 4 MB
    update_log = UpdateLog(store)
    update_log.start()
    compactor = CompactionWorker(store, timedelta(days=1))
    compactor.start()
    done: list[CompactionResult] = []
    compactor.on_done.append(lambda result, _: done.append(result))
    rooms = RoomManager(store, update_log, compactor, RoomPolicy(compact_after_rows=10))
    written = 0

    async def write(rows: int) -> None:
        nonlocal written
        for _ in range(rows):
            written += 1
            title = f"take {written}"
            room.server_write(
                lambda doc, title=title: doc.get("spec", type=Map).update({"title": title})
            )
        await update_log.flush("film")

    try:
        room = await rooms.get("film")
        mib = room.compacted_bytes // COMPACT_ROWS_PER_BYTES
        assert mib >= 3, room.compacted_bytes
        await write(10 * mib - 1)
        assert room.tail_rows == 10 * mib - 1  # no compaction asked for at 10 rows
        await write(1)
        assert room.tail_rows == 0  # asked for

        def compacted() -> None:
            assert [result.merged_rows for result in done] == [10 * mib]

        await eventually(compacted)
        assert room.compacted_bytes == done[0].snapshot_bytes != 0
        assert len(compactor.on_done) == 2  # the test's hook and the manager's
        await rooms.close()
        assert len(compactor.on_done) == 1  # a closed manager hears of no compaction
    finally:
        await rooms.close()
        await compactor.stop()
        await update_log.stop(10)
