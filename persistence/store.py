"""The interface every storage backend implements (SQLite embedded, Postgres)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from blackboard.persistence.database import Database, RowWriter
from blackboard.persistence.fence import FenceToken
from blackboard.persistence.records import (
    HistoryEntry,
    LogEntry,
    PendingAppend,
    ProjectRecord,
    Snapshot,
    StoredDocument,
)


class Store(Protocol):
    """Durable state of every project. All methods are safe to call concurrently."""

    backend: str  # "sqlite" or "postgres"
    db: Database  # for stores of other concerns (ledger, corrections, fences) on it

    async def open(self, *, migrate_schema: bool) -> None:
        """Connect; apply pending migrations if `migrate_schema`, else raise SchemaBehind."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError if the backend cannot answer now."""

    async def create_project(
        self,
        project_id: str,
        title: str,
        initial_update: bytes,
        actor: str,
        with_rows: RowWriter | None = None,
    ) -> ProjectRecord:
        """Insert the project, its first log row (seq 1) and what `with_rows` writes in
        one transaction; ProjectExists if taken."""

    async def get_project(self, project_id: str) -> ProjectRecord | None: ...

    async def list_projects(self, limit: int, after: str | None) -> list[ProjectRecord]:
        """Projects ordered by id, starting after `after`."""

    async def append(self, batch: Sequence[PendingAppend]) -> list[int]:
        """Commit every row in one transaction; return their seqs, in order.

        Seqs are gap-free per project and increase in commit order.
        """

    async def load(self, project_id: str) -> StoredDocument:
        """The newest snapshot and the log after it; ProjectNotFound if unknown."""

    async def load_at(self, project_id: str, upto_seq: int) -> StoredDocument:
        """The newest snapshot at or before `upto_seq` and the log up to it, read in one
        consistent view; HistoryPruned if log rows in between are no longer retained."""

    async def seq_at_time(self, project_id: str, at: datetime) -> int:
        """The last seq committed at or before `at` (0 if none)."""

    async def history(self, project_id: str, after_seq: int, limit: int) -> list[HistoryEntry]: ...

    async def read_log(self, project_id: str, after_seq: int, limit: int) -> list[LogEntry]:
        """Log rows with seq > after_seq, oldest first (catch-up)."""

    async def latest_seqs(self, project_ids: Sequence[str]) -> dict[str, int]:
        """The last committed seq of each of these projects (unknown ids are left out)."""

    async def save_snapshot(
        self, project_id: str, snapshot: Snapshot, *, fence: FenceToken | None = None
    ) -> bool:
        """Store a snapshot; False if one at that seq exists already. With `fence`, only
        while that fence is current (else FenceLost, nothing stored)."""

    async def prune(self, project_id: str, before: datetime) -> int:
        """Forget history older than `before`: the log up to the newest snapshot taken
        before `before` (every row it covers is older), and the snapshots below that
        one; and, since then, the newest snapshot but one when less log than its own
        size lies between its neighbours. Every state since `before` stays rebuildable.
        Returns the log rows deleted."""

    async def oldest_retained_seq(self, project_id: str) -> int:
        """The lowest seq whose state history can still rebuild."""
