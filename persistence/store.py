"""The interface every storage backend implements (SQLite embedded, Postgres)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from persistence.database import RowWriter
from persistence.records import (
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
        """The newest snapshot at or before `upto_seq` and the log up to it."""

    async def seq_at_time(self, project_id: str, at: datetime) -> int:
        """The last seq committed at or before `at` (0 if none)."""

    async def history(self, project_id: str, after_seq: int, limit: int) -> list[HistoryEntry]: ...

    async def read_log(self, project_id: str, after_seq: int, limit: int) -> list[LogEntry]:
        """Log rows with seq > after_seq, oldest first (catch-up)."""

    async def save_snapshot(self, project_id: str, snapshot: Snapshot) -> bool:
        """Store a snapshot; False if one at that seq exists already."""

    async def prune(self, project_id: str, before: datetime) -> int:
        """Delete log rows covered by the newest snapshot and snapshots older than it,
        if created before `before`; return the number of log rows deleted."""

    async def oldest_retained_seq(self, project_id: str) -> int:
        """The lowest seq whose state history can still rebuild."""
