"""Compaction on the embedded default: past the threshold the log becomes a snapshot,
and reloading gives the same document, byte for byte of its JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta

from pycrdt import Doc, Map

from persistence.compaction import compact
from persistence.document_store import DocumentStore
from persistence.factory import make_store
from persistence.records import PendingAppend
from persistence.replay import replay
from sync.client import BlackboardClient
from sync.projects import initial_update
from tests.support.api import create_project, eventually, project_json
from tests.support.server import ServerProcess


async def test_log_is_compacted_and_reload_is_identical(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(env={"BLACKBOARD_COMPACT_AFTER_ROWS": "25"})
    await create_project(server, "long")
    async with BlackboardClient(server.ws, "long") as client:
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

    server.stop()
    server.restart()
    after = await project_json(server, "long")
    assert json.dumps(after["doc"], sort_keys=True) == json.dumps(before["doc"], sort_keys=True)


async def test_append_racing_compaction_is_not_lost(store: DocumentStore) -> None:
    await store.create_project("race", "race", initial_update("race", 10, "USD", {}), "t")
    writer = Doc()
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for i in range(300):
        writer.get("tasks", type=Map)[f"T{i}"] = Map({"attempt": i})

    async def append_all() -> None:
        for update in updates:
            await store.append([PendingAppend("race", update, "writer")])

    async def compact_repeatedly() -> None:
        for _ in range(15):
            await compact(store, "race", timedelta(0))  # prune everything it may
            await asyncio.sleep(0)

    await asyncio.gather(append_all(), compact_repeatedly())
    doc = replay(await store.load("race"))
    assert len(doc.get("tasks", type=Map)) == 300
    assert doc.get("spec", type=Map)["title"] == "race"
