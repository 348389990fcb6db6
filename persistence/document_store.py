"""Projects, the update log and snapshots, written once for both SQL backends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from blackboard.persistence.clock import utc_now
from blackboard.persistence.database import Connection, Database, Row, RowWriter
from blackboard.persistence.errors import (
    HistoryPruned,
    ProjectExists,
    ProjectNotFound,
    StoreError,
)
from blackboard.persistence.fence import Fences, FenceToken
from blackboard.persistence.history import oldest_rebuildable_seq
from blackboard.persistence.log_append import append_batch
from blackboard.persistence.migrator import migrate
from blackboard.persistence.records import (
    HistoryEntry,
    LogEntry,
    PendingAppend,
    ProjectRecord,
    Snapshot,
    StoredDocument,
)
from blackboard.persistence.snapshot_rows import insert_snapshot, newest_snapshot

_NO_LIMIT = 2**62
_IDS_PER_QUERY = 500  # bound on parameters in one IN (...) list
# Log rows a time lookup reads per query: about 20 ms of SQLite's reader where one
# project's rows lie among others' (bench/RESULTS.md).
SEQ_AT_TIME_WINDOW = 10_000


class DocumentStore:
    """Implements `blackboard.persistence.store.Store` on any `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def backend(self) -> str:
        return self.db.dialect

    async def open(self, *, migrate_schema: bool) -> None:
        await self.db.open()
        try:
            await migrate(self.db, apply=migrate_schema)
        except BaseException:
            await self.db.close()
            raise

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        try:
            await self.db.fetchval("SELECT 1")
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    async def create_project(
        self,
        project_id: str,
        title: str,
        initial_update: bytes,
        actor: str,
        with_rows: RowWriter | None = None,
    ) -> ProjectRecord:
        now = utc_now()
        async with self.db.transaction() as conn:
            inserted = await conn.execute(
                "INSERT INTO projects (project_id, title, seq, created_at)"
                " VALUES ($1, $2, 1, $3) ON CONFLICT DO NOTHING",
                project_id,
                title,
                now,
            )
            if not inserted:
                raise ProjectExists(project_id)
            await conn.execute(
                'INSERT INTO doc_updates (project_id, seq, "update", actor, status_epochs,'
                " created_at) VALUES ($1, 1, $2, $3, $4, $5)",
                project_id,
                initial_update,
                actor,
                b"",  # a new project has no task-status write yet
                now,
            )
            if with_rows is not None:
                await with_rows(conn, project_id, now)
        return ProjectRecord(project_id, title, 1, now)

    async def get_project(self, project_id: str) -> ProjectRecord | None:
        row = await self.db.fetchrow(
            "SELECT project_id, title, seq, created_at FROM projects WHERE project_id = $1",
            project_id,
        )
        return _project(row) if row else None

    async def list_projects(self, limit: int, after: str | None) -> list[ProjectRecord]:
        rows = await self.db.fetch(
            "SELECT project_id, title, seq, created_at FROM projects"
            " WHERE project_id > $1 ORDER BY project_id LIMIT $2",
            after or "",
            limit,
        )
        return [_project(row) for row in rows]

    async def append(self, batch: Sequence[PendingAppend]) -> list[int]:
        return await append_batch(self.db, batch)

    async def load(self, project_id: str) -> StoredDocument:
        return await self.load_at(project_id, _NO_LIMIT)

    async def load_at(self, project_id: str, upto_seq: int) -> StoredDocument:
        # One consistent view (repeatable read on Postgres), so a concurrent prune cannot
        # remove rows between reading the snapshot and reading the log after it.
        async with self.db.read_transaction() as conn:
            last = await conn.fetchval("SELECT seq FROM projects WHERE project_id = $1", project_id)
            if last is None:
                raise ProjectNotFound(project_id)
            snapshot = await newest_snapshot(conn, project_id, upto_seq)
            base = snapshot.upto_seq if snapshot else 0
            tail = await conn.fetch(
                'SELECT seq, "update", actor, created_at, status_epochs FROM doc_updates'
                " WHERE project_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                project_id,
                base,
                upto_seq,
            )
        # Seqs are unique, so the right count means no row between base and the end is
        # missing: a pruned stretch is an error, never a silently older state.
        if len(tail) != max(0, min(upto_seq, last) - base):
            raise HistoryPruned(project_id, upto_seq)
        return StoredDocument(snapshot, [_entry(r) for r in tail])

    async def seq_at_time(self, project_id: str, at: datetime) -> int:
        # Read backwards from the newest row (the log's own key; no time index to write
        # on every append): the cost grows with the rows after `at`, not with the log.
        # A window of seqs per query, so that a lookup far back in a busy project holds
        # a connection (SQLite's one reader, which room loads wait for) only briefly.
        bounds = await self.db.fetchrow(
            "SELECT min(seq), max(seq) FROM doc_updates WHERE project_id = $1", project_id
        )
        first, high = bounds if bounds is not None else (None, None)
        while first is not None and high >= first:
            low = max(first, high - SEQ_AT_TIME_WINDOW + 1)
            value = await self.db.fetchval(
                "SELECT max(seq) FROM doc_updates WHERE project_id = $1"
                " AND seq BETWEEN $2 AND $3 AND created_at <= $4",
                project_id,
                low,
                high,
                at,
            )
            if value is not None:
                return value
            high = low - 1
        return 0

    async def history(self, project_id: str, after_seq: int, limit: int) -> list[HistoryEntry]:
        rows = await self.db.fetch(
            'SELECT seq, actor, created_at, length("update") FROM doc_updates'
            " WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            project_id,
            after_seq,
            limit,
        )
        return [HistoryEntry(r[0], r[1], r[2], r[3]) for r in rows]

    async def read_log(self, project_id: str, after_seq: int, limit: int) -> list[LogEntry]:
        rows = await self.db.fetch(
            'SELECT seq, "update", actor, created_at, status_epochs FROM doc_updates'
            " WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            project_id,
            after_seq,
            limit,
        )
        return [_entry(r) for r in rows]

    async def latest_seqs(self, project_ids: Sequence[str]) -> dict[str, int]:
        latest: dict[str, int] = {}
        for start in range(0, len(project_ids), _IDS_PER_QUERY):
            chunk = project_ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
            rows = await self.db.fetch(
                f"SELECT project_id, seq FROM projects WHERE project_id IN ({marks})", *chunk
            )
            latest.update((row[0], row[1]) for row in rows)
        return latest

    async def save_snapshot(
        self, project_id: str, snapshot: Snapshot, *, fence: FenceToken | None = None
    ) -> bool:
        async with self.db.transaction() as conn:
            if fence is not None:
                # The fence row stays locked until COMMIT: no other compactor can take
                # it between this check and the insert.
                await Fences(self.db, fence.holder).check(conn, fence)
            return await insert_snapshot(conn, project_id, snapshot)

    async def prune(self, project_id: str, before: datetime) -> int:
        async with self.db.transaction() as conn:
            # The base is the newest snapshot taken before `before`: every row it covers
            # was committed before it, so everything after it stays and any state since
            # `before` can still be rebuilt; rows up to it and older snapshots go.
            base = await conn.fetchval(
                "SELECT max(upto_seq) FROM doc_snapshots WHERE project_id = $1 AND created_at < $2",
                project_id,
                before,
            )
            deleted = 0
            if base is not None:
                deleted = await conn.execute(
                    "DELETE FROM doc_updates WHERE project_id = $1 AND seq <= $2",
                    project_id,
                    base,
                )
                await conn.execute(
                    "DELETE FROM doc_snapshots WHERE project_id = $1 AND upto_seq < $2",
                    project_id,
                    base,
                )
            await _thin_snapshots(conn, project_id)
        return deleted

    async def oldest_retained_seq(self, project_id: str) -> int:
        snapshots = await self.db.fetch(
            "SELECT upto_seq FROM doc_snapshots WHERE project_id = $1 ORDER BY upto_seq",
            project_id,
        )
        first = await self.db.fetchval(
            "SELECT min(seq) FROM doc_updates WHERE project_id = $1", project_id
        )
        return oldest_rebuildable_seq([r[0] for r in snapshots], first)


async def _thin_snapshots(conn: Connection, project_id: str) -> None:
    """Drop the newest snapshot but one when the log between its neighbours holds fewer
    bytes than it. Compaction runs every thousand rows or so and every snapshot within
    the retention was kept, so a big document's snapshots took many times the room of
    its log. Each snapshot kept now has at least its own size of log between its
    neighbours, so all of them take at most about twice the room of the log. A state
    between them is rebuilt from the older one and the log, which stays for the
    retention. The newest one stays, and so does the base: `prune` deleted every
    snapshot below it, so with three left it is never the middle one."""
    newest = await conn.fetch(
        "SELECT upto_seq, length(state) FROM doc_snapshots"
        " WHERE project_id = $1 ORDER BY upto_seq DESC LIMIT 3",
        project_id,
    )
    if len(newest) < 3:
        return
    (last, _), (middle, middle_bytes), (first, _) = newest
    between = await conn.fetchval(
        'SELECT coalesce(sum(length("update")), 0) FROM doc_updates'
        " WHERE project_id = $1 AND seq > $2 AND seq <= $3",
        project_id,
        first,
        last,
    )
    if between < middle_bytes:
        await conn.execute(
            "DELETE FROM doc_snapshots WHERE project_id = $1 AND upto_seq = $2",
            project_id,
            middle,
        )


def _project(row: Row) -> ProjectRecord:
    return ProjectRecord(row[0], row[1], row[2], row[3])


def _entry(row: Row) -> LogEntry:
    return LogEntry(row[0], bytes(row[1]), row[2], row[3], bytes(row[4]))
