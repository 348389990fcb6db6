"""The embedded backend: SQLite in WAL mode in the data dir, one writer connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from pathlib import Path

import aiosqlite

from persistence.clock import from_iso, to_iso, utc_now
from persistence.errors import ProjectExists, ProjectNotFound, SchemaBehind, StoreError
from persistence.history import oldest_rebuildable_seq
from persistence.records import (
    HistoryEntry,
    LogEntry,
    PendingAppend,
    ProjectRecord,
    Snapshot,
    StoredDocument,
)
from schemas.migration_files import migrations_for


class SQLiteStore:
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def open(self, *, migrate: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we acknowledge it.
        await self.db.execute("PRAGMA synchronous=FULL")
        await self.db.execute("PRAGMA foreign_keys=ON")
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self._migrate(apply=migrate)

    async def _migrate(self, *, apply: bool) -> None:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with self.db.execute("SELECT version FROM schema_migrations") as cur:
            done = {row[0] for row in await cur.fetchall()}
        missing = [m for m in migrations_for("sqlite") if m.version not in done]
        if missing and not apply:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
            raise SchemaBehind(f"database {self.path} lacks migrations {names}")
        for migration in missing:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(migration.sql):
                    await self.db.execute(statement)
                await self.db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, to_iso(utc_now())),
                )
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        await self.db.execute("SELECT 1")

    async def create_project(
        self, project_id: str, title: str, initial_update: bytes, actor: str
    ) -> ProjectRecord:
        now = to_iso(utc_now())
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self.db.execute(
                "INSERT INTO projects (project_id, title, seq, created_at) VALUES (?, ?, 1, ?)",
                (project_id, title, now),
            )
            await self.db.execute(
                'INSERT INTO doc_updates (project_id, seq, "update", actor, created_at)'
                " VALUES (?, 1, ?, ?, ?)",
                (project_id, initial_update, actor, now),
            )
            await self.db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            await self.db.execute("ROLLBACK")
            raise ProjectExists(project_id) from exc
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return ProjectRecord(project_id, title, 1, from_iso(now))

    async def get_project(self, project_id: str) -> ProjectRecord | None:
        async with self.db.execute(
            "SELECT project_id, title, seq, created_at FROM projects WHERE project_id = ?",
            (project_id,),
        ) as cur:
            row = await cur.fetchone()
        return _project(row) if row else None

    async def list_projects(self, limit: int, after: str | None) -> list[ProjectRecord]:
        async with self.db.execute(
            "SELECT project_id, title, seq, created_at FROM projects"
            " WHERE project_id > ? ORDER BY project_id LIMIT ?",
            (after or "", limit),
        ) as cur:
            return [_project(row) for row in await cur.fetchall()]

    async def append(self, batch: Sequence[PendingAppend]) -> list[int]:
        now = to_iso(utc_now())
        seqs: list[int] = []
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            # Rows of one project are contiguous runs in arrival order; each run takes
            # its block of seqs from the project's counter inside this transaction.
            for project_id, run in groupby(batch, key=lambda p: p.project_id):
                rows = list(run)
                async with self.db.execute(
                    "UPDATE projects SET seq = seq + ? WHERE project_id = ? RETURNING seq",
                    (len(rows), project_id),
                ) as cur:
                    found = await cur.fetchone()
                if found is None:
                    raise ProjectNotFound(project_id)
                first = found[0] - len(rows) + 1
                await self.db.executemany(
                    'INSERT INTO doc_updates (project_id, seq, "update", actor, created_at)'
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (project_id, first + i, row.update, row.actor, now)
                        for i, row in enumerate(rows)
                    ],
                )
                seqs.extend(range(first, first + len(rows)))
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return seqs

    async def load(self, project_id: str) -> StoredDocument:
        return await self.load_at(project_id, None)

    async def load_at(self, project_id: str, upto_seq: int | None) -> StoredDocument:
        limit = upto_seq if upto_seq is not None else 2**62
        # One read transaction, so a concurrent compaction cannot split the view.
        await self.db.execute("BEGIN")
        try:
            if await self.get_project(project_id) is None:
                raise ProjectNotFound(project_id)
            async with self.db.execute(
                "SELECT upto_seq, state, state_vector, created_at FROM doc_snapshots"
                " WHERE project_id = ? AND upto_seq <= ? ORDER BY upto_seq DESC LIMIT 1",
                (project_id, limit),
            ) as cur:
                row = await cur.fetchone()
            snapshot = Snapshot(row[0], row[1], row[2], from_iso(row[3])) if row else None
            async with self.db.execute(
                'SELECT seq, "update", actor, created_at FROM doc_updates'
                " WHERE project_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (project_id, snapshot.upto_seq if snapshot else 0, limit),
            ) as cur:
                tail = [_entry(r) for r in await cur.fetchall()]
        finally:
            await self.db.execute("COMMIT")
        return StoredDocument(snapshot, tail)

    async def seq_at_time(self, project_id: str, at: datetime) -> int:
        async with self.db.execute(
            "SELECT max(seq) FROM doc_updates WHERE project_id = ? AND created_at <= ?",
            (project_id, to_iso(at)),
        ) as cur:
            row = await cur.fetchone()
        return row[0] or 0 if row else 0

    async def history(self, project_id: str, after_seq: int, limit: int) -> list[HistoryEntry]:
        async with self.db.execute(
            'SELECT seq, actor, created_at, length("update") FROM doc_updates'
            " WHERE project_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (project_id, after_seq, limit),
        ) as cur:
            return [HistoryEntry(r[0], r[1], from_iso(r[2]), r[3]) for r in await cur.fetchall()]

    async def read_log(self, project_id: str, after_seq: int, limit: int) -> list[LogEntry]:
        async with self.db.execute(
            'SELECT seq, "update", actor, created_at FROM doc_updates'
            " WHERE project_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (project_id, after_seq, limit),
        ) as cur:
            return [_entry(r) for r in await cur.fetchall()]

    async def save_snapshot(self, project_id: str, snapshot: Snapshot) -> bool:
        async with self.db.execute(
            "INSERT INTO doc_snapshots (project_id, upto_seq, state, state_vector, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                project_id,
                snapshot.upto_seq,
                snapshot.state,
                snapshot.state_vector,
                to_iso(snapshot.created_at),
            ),
        ) as cur:
            return cur.rowcount == 1

    async def prune(self, project_id: str, before: datetime) -> int:
        cutoff = to_iso(before)
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            async with self.db.execute(
                "SELECT max(upto_seq) FROM doc_snapshots WHERE project_id = ?", (project_id,)
            ) as cur:
                row = await cur.fetchone()
            newest = row[0] if row and row[0] is not None else None
            deleted = 0
            if newest is not None:
                async with self.db.execute(
                    "DELETE FROM doc_updates WHERE project_id = ? AND seq <= ? AND created_at < ?",
                    (project_id, newest, cutoff),
                ) as cur:
                    deleted = cur.rowcount
                await self.db.execute(
                    "DELETE FROM doc_snapshots"
                    " WHERE project_id = ? AND upto_seq < ? AND created_at < ?",
                    (project_id, newest, cutoff),
                )
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return deleted

    async def oldest_retained_seq(self, project_id: str) -> int:
        async with self.db.execute(
            "SELECT upto_seq FROM doc_snapshots WHERE project_id = ? ORDER BY upto_seq",
            (project_id,),
        ) as cur:
            snapshots = [row[0] for row in await cur.fetchall()]
        async with self.db.execute(
            "SELECT min(seq) FROM doc_updates WHERE project_id = ?", (project_id,)
        ) as cur:
            row = await cur.fetchone()
        return oldest_rebuildable_seq(snapshots, row[0] if row else None)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no `;` inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _project(row: sqlite3.Row | tuple) -> ProjectRecord:
    return ProjectRecord(row[0], row[1], row[2], from_iso(row[3]))


def _entry(row: sqlite3.Row | tuple) -> LogEntry:
    return LogEntry(row[0], bytes(row[1]), row[2], from_iso(row[3]))
