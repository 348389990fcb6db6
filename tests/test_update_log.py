"""The group-commit log on both backends: seqs resolve after commit, a missing project
cannot hold the others back, the byte bound is an admission check, and a row flagged
`commit_with_next` never commits apart from the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.errors import LogFull, ProjectNotFound
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.update_log import UpdateLog
from blackboard.sync.projects.creation import initial_update


class BatchRecorder:
    """The store as the log sees it, keeping every batch the log commits."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self.batches: list[list[PendingAppend]] = []

    async def append(self, batch: Sequence[PendingAppend]) -> list[int]:
        self.batches.append(list(batch))
        return await self.store.append(batch)


async def test_batches_commit_and_a_missing_project_is_refused_alone(
    store: DocumentStore,
) -> None:
    for project_id in ("a", "b"):
        await store.create_project(project_id, project_id, initial_update("t", 1, "USD", {}), "t")
    log = UpdateLog(store)
    log.start()
    try:
        futures = [
            log.append("a", b"\x01", "t"),
            log.append("ghost", b"\x02", "t"),
            log.append("b", b"\x03", "t"),
            log.append("a", b"\x04", "t"),
        ]
        done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        assert done[0] == 2 and done[2] == 2 and done[3] == 3
        assert isinstance(done[1], ProjectNotFound)
        assert log.pending == 0
        # The log keeps working after dropping the poison rows.
        assert await asyncio.wait_for(log.append("b", b"\x05", "t"), 10) == 3
        stored = await store.history("a", 0, 10)
        assert [(h.seq, h.size) for h in stored[1:]] == [(2, 1), (3, 1)]
    finally:
        await log.stop(5)


async def test_the_byte_bound_is_checked_before_applying_not_after(
    store: DocumentStore,
) -> None:
    await store.create_project("a", "a", initial_update("t", 1, "USD", {}), "t")
    log = UpdateLog(store, max_pending_bytes=10)  # not started: nothing drains
    log.check_room(10)
    with pytest.raises(LogFull):
        log.check_room(11)
    # An update already applied to a live document is always queued (a refusal here
    # would leave it applied but never stored); the next admission check refuses.
    queued = log.append("a", b"\x00" * 20, "t")
    with pytest.raises(LogFull):
        log.check_room(1)
    log.start()
    assert await asyncio.wait_for(queued, 10) == 2
    log.check_room(10)
    await log.stop(5)


async def test_a_row_flagged_commit_with_next_is_never_cut_from_the_next(
    store: DocumentStore,
) -> None:
    await store.create_project("a", "a", initial_update("t", 1, "USD", {}), "t")
    recorder = BatchRecorder(store)
    log = UpdateLog(recorder, max_batch=2)  # type: ignore[arg-type]
    # Queued before the log starts, so the cuts fall where max_batch puts them: after
    # the second row, which is flagged, and after the fifth, flagged, then the sixth.
    futures = [
        log.append("a", b"\x01", "t"),
        log.append("a", b"\x02", "t", b"e2", commit_with_next=True),
        log.append("a", b"\x03", "t", b"e3"),  # the repair of \x02
        log.append("a", b"\x04", "t"),
        log.append("a", b"\x05", "t", commit_with_next=True),
        log.append("a", b"\x06", "t", commit_with_next=True),
        log.append("a", b"\x07", "t"),
        log.append("a", b"\x08", "t"),
    ]
    log.start()
    try:
        assert await asyncio.wait_for(asyncio.gather(*futures), 10) == list(range(2, 10))
        log.check_room(log.max_pending_bytes)  # every queued byte was accounted back
    finally:
        await log.stop(5)
    assert [[row.update for row in batch] for batch in recorder.batches] == [
        [b"\x01", b"\x02", b"\x03"],
        [b"\x04", b"\x05", b"\x06", b"\x07"],
        [b"\x08"],
    ]
    assert [e.status_epochs for e in await store.read_log("a", 2, 2)] == [b"e2", b"e3"]


async def test_commit_listeners_hear_each_committed_row_and_a_failing_one_is_contained(
    store: DocumentStore,
) -> None:
    await store.create_project("a", "a", initial_update("t", 1, "USD", {}), "t")
    log = UpdateLog(store)
    heard: list[tuple[int, int]] = []

    def failing(seq: int, size: int) -> None:
        raise RuntimeError("a listener failed")

    log.start()
    try:
        futures = [
            log.append("a", b"\x01", "t", on_commit=lambda seq, size: heard.append((seq, size))),
            log.append("a", b"\x02\x02", "t", on_commit=failing),
            log.append("a", b"\x03\x03\x03", "t", on_commit=lambda s, n: heard.append((s, n))),
            log.append("ghost", b"\x04", "t", on_commit=lambda s, n: heard.append((s, n))),
        ]
        done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        assert done[:3] == [2, 3, 4]
        assert isinstance(done[3], ProjectNotFound)  # refused: its listener never hears
        assert heard == [(2, 1), (4, 3)]
        assert log.pending == 0
    finally:
        await log.stop(5)
