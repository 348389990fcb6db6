"""Compaction on the embedded default: past the threshold the log becomes a snapshot,
and reloading gives the same document, byte for byte of its JSON, and the same
status-epoch record."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from pycrdt import Doc, Map

from blackboard.persistence.compaction import compact
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.factory import make_store
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.replay import replay
from blackboard.sync.client import Session
from blackboard.sync.projects.creation import initial_update
from tests.support.api import create_project, eventually, project_json
from tests.support.server import StartServer


async def test_log_is_compacted_and_reload_is_identical(
    start_server: StartServer,
) -> None:
    server = await start_server(env={"BLACKBOARD_COMPACT_AFTER_ROWS": "25"})
    await create_project(server, "long")
    async with Session(server.ws, "long") as client:
        shots = client.doc.get("shots", type=Map)
        for i in range(120):
            shots[f"S{i % 30}"] = Map({"title": f"take {i}", "order": i})
        await client.flush()
    before = await project_json(server, "long")

    store = make_store(None, server.data_dir)
    await store.open(migrate_schema=False)
    try:

        async def snapshot_taken() -> None:
            stored = await store.load("long")
            assert stored.snapshot is not None and stored.snapshot.upto_seq >= 100
            assert len(stored.tail) < 25

        await eventually(snapshot_taken)
    finally:
        await store.close()

    await server.stop()
    await server.restart()
    after = await project_json(server, "long")
    assert json.dumps(after["doc"], sort_keys=True) == json.dumps(before["doc"], sort_keys=True)


def task_updates(count: int) -> list[bytes]:
    """One update per new task, as a client writing them one by one sends them."""
    writer = Doc()
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for i in range(count):
        writer.get("tasks", type=Map)[f"T{i}"] = Map({"attempt": i})
    return updates


async def test_append_racing_compaction_is_not_lost(store: DocumentStore) -> None:
    await store.create_project("race", "race", initial_update("race", 10, "USD", {}), "t")
    updates = task_updates(300)

    async def append_all() -> None:
        for update in updates:
            await store.append([PendingAppend("race", update, "writer")])

    async def compact_repeatedly() -> None:
        for _ in range(15):
            await compact(store, "race", timedelta(0))  # prune everything it may
            await asyncio.sleep(0)  # one loop turn: let appends in between

    await asyncio.gather(append_all(), compact_repeatedly())
    doc = replay(await store.load("race"))
    assert len(doc.get("tasks", type=Map)) == 300
    assert doc.get("spec", type=Map)["title"] == "race"


async def test_compaction_keeps_the_status_epoch_record(store: DocumentStore) -> None:
    await store.create_project("film", "film", initial_update("film", 10, "USD", {}), "t")
    updates = task_updates(6)
    keep = timedelta(days=1)  # prune nothing: only the snapshots matter here

    await store.append(
        [PendingAppend("film", u, "w", f"<{i}>".encode()) for i, u in enumerate(updates[:3])]
    )
    assert (await compact(store, "film", keep)).merged_rows == 4
    first = await store.load("film")
    assert first.snapshot is not None and first.snapshot.status_epochs == b"<0><1><2>"

    await store.append([PendingAppend("film", updates[3], "w")])  # nothing recorded
    await store.append(
        [PendingAppend("film", u, "w", f"<{i}>".encode()) for i, u in enumerate(updates[4:], 4)]
    )
    before = await store.load("film")
    assert before.status_epochs == b"<0><1><2><4><5>"
    await compact(store, "film", keep)
    after = await store.load("film")
    # The old snapshot's record, then the merged rows' in seq order.
    assert after.tail == [] and after.snapshot is not None
    assert after.snapshot.status_epochs == first.snapshot.status_epochs + b"<4><5>"
    assert after.status_epochs == before.status_epochs
