"""What the retained log and snapshots can still rebuild (shared by every backend)."""

from __future__ import annotations

from datetime import datetime

from blackboard.persistence.errors import HistoryPruned
from blackboard.persistence.store import Store


def oldest_rebuildable_seq(snapshot_seqs: list[int], first_log_seq: int | None) -> int:
    """The lowest seq whose state can be rebuilt.

    Pruning deletes a prefix of the log, so the state at seq S is known when the log
    starts at 1, or some snapshot sits between the first retained row and S.
    """
    if first_log_seq is None:
        return max(snapshot_seqs, default=0)
    if first_log_seq <= 1:
        return 0
    usable = [seq for seq in snapshot_seqs if seq >= first_log_seq - 1]
    return min(usable) if usable else first_log_seq - 1


async def seq_at_time(store: Store, project_id: str, at: datetime) -> int:
    """The last seq committed at or before `at`, or HistoryPruned when retention removed
    the rows that would tell (0 if `at` is before the project's first update)."""
    seq = await store.seq_at_time(project_id, at)
    if seq:
        return seq
    first = await store.history(project_id, 0, 1)
    if first and first[0].seq == 1:
        return 0
    if not first:
        # The whole log is compacted away: only the newest snapshot is left, and it was
        # taken after its last update, so from its time on the state is that snapshot.
        snapshot = (await store.load(project_id)).snapshot
        if snapshot is not None and at >= snapshot.created_at:
            return snapshot.upto_seq
    raise HistoryPruned(project_id)
