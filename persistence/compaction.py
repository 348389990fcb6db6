"""Compaction: fold the newest snapshot and the log after it into a new snapshot.

Steps: take the project's compaction fence (`blackboard.persistence.fence`: one compactor per
project across every process, judged by the database clock) -> load the snapshot and
log tail in one consistent view -> replay them into a Doc and encode it, off the event
loop (`folder`: a child process in the server, a thread in the CLI) -> save the snapshot,
checked against the fence's epoch -> prune what retention no longer needs -> release the
fence. A fold that fails (a row that does not apply) or overruns the lease raises, and
nothing is written.

Safe against concurrent appends (the snapshot covers only the seqs it read), against a
second compactor (it finds the fence held and skips; a stale one whose fence was taken
over cannot save) and against a crash at any step (nothing is deleted before a snapshot
covering it is committed; a crashed holder's fence simply expires).

The new snapshot's status-epochs record is the loaded one: the old snapshot's followed
by every merged row's, so the lattices rebuild the same after a reload.

A row whose update waits for one the log does not have yet (yrs keeps its structs
aside) would be left out of the snapshot, an encoding, and lost when the missing update
arrives. With `held` (which rows a document at a state vector keeps aside: the sync
layer's struct reader), compaction skips while such a row is younger than the
retention, and after that long, when its update is not coming, drops it with an error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from blackboard.persistence.clock import utc_now
from blackboard.persistence.errors import ProjectNotFound
from blackboard.persistence.fence import FenceLost, Fences
from blackboard.persistence.records import Snapshot
from blackboard.persistence.replay import Folder, fold_in_thread, parts
from blackboard.persistence.store import Store

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(seconds=120)
# Which of the updates a document at the state vector keeps aside, by index
# (`blackboard.sync.wire.yjs_structs.held_back`, off the event loop).
HeldCheck = Callable[[bytes, list[bytes]], Awaitable[list[int]]]


@dataclass(frozen=True)
class CompactionResult:
    project_id: str
    upto_seq: int
    merged_rows: int
    snapshot_bytes: int
    pruned_rows: int
    skipped: str | None = None  # why nothing was done (another compactor had it, a row waits)


def compaction_fence(project_id: str) -> str:
    """The name of the fence one compactor of `project_id` holds."""
    return f"compaction:{project_id}"


def this_process() -> str:
    """A lease holder name that says where a stuck lease came from."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def compact(
    store: Store,
    project_id: str,
    retention: timedelta,
    *,
    lease_ttl: timedelta = DEFAULT_LEASE,
    holder: str | None = None,
    folder: Folder = fold_in_thread,
    held: HeldCheck | None = None,
) -> CompactionResult:
    if await store.get_project(project_id) is None:
        raise ProjectNotFound(project_id)
    fences = Fences(store.db, holder or this_process())
    token = await fences.acquire(compaction_fence(project_id), lease_ttl)
    if token is None:
        return _skipped(project_id, "another compactor holds the lease")
    try:
        stored = await store.load(project_id)
        snapshot_bytes = len(stored.snapshot.state) if stored.snapshot else 0
        if stored.tail:
            # Past the lease another compactor may have the fence: no use waiting longer
            # for the fold and the check together.
            async with asyncio.timeout(lease_ttl.total_seconds()):
                state, state_vector = await folder(parts(stored))
                updates = [entry.update for entry in stored.tail]
                held_rows = await held(state_vector, updates) if held is not None else []
            waiting = [stored.tail[i] for i in held_rows]
            if waiting and utc_now() - waiting[-1].created_at < retention:
                return _skipped(
                    project_id,
                    f"log row {waiting[0].seq} waits for an update the log does not have",
                )
            for entry in waiting:
                log.error(
                    "compaction of %s drops log row %d: the update it waits for did not"
                    " come within the retention",
                    project_id,
                    entry.seq,
                    extra={"project_id": project_id},
                )
            snapshot = Snapshot(stored.seq, state, state_vector, utc_now(), stored.status_epochs)
            try:
                await store.save_snapshot(project_id, snapshot, fence=token)
            except FenceLost:
                return _skipped(project_id, "the lease expired and another compactor took it")
            snapshot_bytes = len(state)
        pruned = await store.prune(project_id, utc_now() - retention)
    finally:
        await fences.release(token)
    return CompactionResult(project_id, stored.seq, len(stored.tail), snapshot_bytes, pruned)


def _skipped(project_id: str, reason: str) -> CompactionResult:
    return CompactionResult(project_id, 0, 0, 0, 0, skipped=reason)
