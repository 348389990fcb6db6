"""A room load replays its log tail row by row with the event loop running between rows,
to the same document, and a bad row still fails it by name."""

from __future__ import annotations

import asyncio

import pytest

from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.replay import CorruptDocument, replay_cooperatively
from blackboard.schemas.views import doc_to_json
from tests.test_compaction_fencing import Project


async def test_a_long_tail_replays_with_the_loop_running(store: DocumentStore) -> None:
    project = Project(store)
    await project.create()
    await project.write(200)
    stored = await store.load("film")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        before = ticks
        doc = await replay_cooperatively(stored, slice_s=0)  # yield after every row
        assert ticks - before >= len(stored.tail) == 201
    finally:
        ticker.cancel()
    assert doc_to_json(doc) == doc_to_json(project.doc)

    await store.append([PendingAppend("film", b"\xff\x00\xff", "vandal")])
    with pytest.raises(CorruptDocument, match="log row 202 does not apply"):
        await replay_cooperatively(await store.load("film"))
