"""Compaction: fold the newest snapshot and the log after it into a new snapshot.

Safe against concurrent appends (the snapshot covers only the seqs it read), against a
second compactor (snapshots are keyed by seq and identical for the same seq) and against
a crash at any step (the log is pruned only after the snapshot is committed, and only
where the snapshot covers it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from persistence.clock import utc_now
from persistence.records import Snapshot
from persistence.replay import replay
from persistence.store import Store


@dataclass(frozen=True)
class CompactionResult:
    project_id: str
    upto_seq: int
    merged_rows: int
    snapshot_bytes: int
    pruned_rows: int


async def compact(store: Store, project_id: str, retention: timedelta) -> CompactionResult:
    stored = await store.load(project_id)
    snapshot_bytes = len(stored.snapshot.state) if stored.snapshot else 0
    if stored.tail:
        doc = replay(stored)
        state = doc.get_update()
        await store.save_snapshot(
            project_id, Snapshot(stored.seq, state, doc.get_state(), utc_now())
        )
        snapshot_bytes = len(state)
    pruned = await store.prune(project_id, utc_now() - retention)
    return CompactionResult(project_id, stored.seq, len(stored.tail), snapshot_bytes, pruned)
