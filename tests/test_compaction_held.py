"""Compaction and an update that waits for one the log does not have yet: yrs keeps its
structs aside and a snapshot (the document's encoding) would leave them out, so the
update would never show once the missing one arrived. Both backends."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

import pytest

from blackboard.persistence.compaction import compact, compaction_fence
from blackboard.persistence.doc_worker import DocWorker
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.fence import Fences
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.replay import replay
from blackboard.schemas.views import doc_to_json
from blackboard.sync.wire.yjs_structs import held_back
from tests.support.held_update import log_with_a_held_update
from tests.test_compaction_fencing import snapshot_count

pytestmark = pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)


# As the CLI runs it (`blackboard compact`): in a thread.
_held_in_thread = partial(asyncio.to_thread, held_back)


@pytest.mark.parametrize("deletion", [False, True])
async def test_a_held_update_waits_out_compaction_and_shows_once_it_can(
    store: DocumentStore, deletion: bool
) -> None:
    missing = await log_with_a_held_update(store, deletion=deletion)
    result = await compact(store, "film", timedelta(days=1), held=_held_in_thread)
    assert result.skipped is not None and "waits for an update" in result.skipped
    assert await snapshot_count(store) == 0  # the log is as it was

    await store.append([PendingAppend("film", missing, "author")])
    result = await compact(store, "film", timedelta(days=1), held=_held_in_thread)
    assert result.skipped is None and await snapshot_count(store) == 1
    shots = doc_to_json(replay(await store.load("film")))["shots"]
    if deletion:
        assert "S900" not in shots
    else:
        assert shots["S900"] == {"order": 900.0, "title": "held"}
    assert shots["S901"] == {"order": 901.0}


async def test_a_held_update_older_than_the_retention_is_dropped_with_an_error(
    store: DocumentStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Its update did not come in all that time: compaction goes on, and says what it
    drops (the document never showed it)."""
    await log_with_a_held_update(store)
    with caplog.at_level(logging.ERROR, logger="blackboard.persistence.compaction"):
        result = await compact(store, "film", timedelta(0), held=_held_in_thread)
    assert result.skipped is None and await snapshot_count(store) == 1
    assert "drops log row 3" in caplog.text
    assert "S900" not in doc_to_json(replay(await store.load("film")))["shots"]


async def test_the_servers_check_runs_in_its_document_worker(store: DocumentStore) -> None:
    """As `web.services` wires it: the fold and the check both in the child."""
    await log_with_a_held_update(store)
    worker = DocWorker()
    worker.start()
    try:
        result = await compact(
            store,
            "film",
            timedelta(days=1),
            folder=worker.fold,
            held=partial(worker.run, held_back),
        )
    finally:
        await worker.stop()
    assert result.skipped is not None and "log row 3 waits" in result.skipped


async def test_a_held_check_overrunning_the_lease_writes_nothing(store: DocumentStore) -> None:
    """The lease bounds the fold and the check together: past it another compactor may
    hold the fence, so the check's answer would come too late to act on."""
    await log_with_a_held_update(store)

    async def stuck(state_vector: bytes, updates: list[bytes]) -> list[int]:
        await asyncio.sleep(60)
        return []

    with pytest.raises(TimeoutError):
        await compact(store, "film", timedelta(0), lease_ttl=timedelta(seconds=1), held=stuck)
    assert await snapshot_count(store) == 0
    probe = await Fences(store.db, "probe").acquire(compaction_fence("film"), timedelta(0))
    assert probe is not None, "the fence was released"
