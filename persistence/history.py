"""What the retained log and snapshots can still rebuild (shared by every backend)."""

from __future__ import annotations


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
