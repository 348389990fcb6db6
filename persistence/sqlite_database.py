"""SQLite (WAL, synchronous=FULL) behind `blackboard.persistence.database.Database`.

Two connections, each used by one transaction at a time (an asyncio lock each): one
writes, one reads (`fetch*`, `read_transaction`). In WAL mode readers and the writer do
not wait for each other, so the group commit never queues behind reads: under load
every hand-off costs a turn of a busy event loop, and the room loads' reads queued ahead
of it held the update log back for seconds (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from blackboard.persistence.clock import from_iso, to_iso
from blackboard.persistence.errors import StoreError

_PARAM = re.compile(r"\$(\d+)")
T = TypeVar("T")

# WAL pages copied back into the database at most this often (SQLite's default: 1,000).
# A commit of many projects' rows writes each project's last page to the WAL again; a
# checkpoint copies only the newest copy of each, so a longer WAL copies fewer pages:
# 10k rows/s over 200 projects cost the database thread 11% less CPU (bench/RESULTS.md),
# for a WAL file of up to about 20 MB.
WAL_CHECKPOINT_PAGES = 4000

sqlite3.register_adapter(datetime, to_iso)
sqlite3.register_converter("TIMESTAMP", lambda raw: from_iso(raw.decode()))


def _sql(statement: str) -> str:
    return _PARAM.sub(r"?\1", statement)


def _in_transaction(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], *, foreign_keys: bool
) -> T:
    if foreign_keys:
        return _committed(conn, work)
    conn.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, or SQLite ignores it
    try:
        return _committed(conn, work)
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def _committed(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (a deferred constraint, a busy database) may leave the
        # transaction open: every later BEGIN would fail.
        _roll_back_if_open(conn)
        raise
    return result


def _roll_back_if_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SQLiteConnection:
    """Each call is one hand-off to the database thread (a future and a wake-up of the
    event loop each): a statement's cursor is not closed there, since sqlite3 resets a
    statement that has run to its end, and rows are fetched with the statement."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self._db.execute(_sql(sql), args)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(_sql(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return list(await self._db.execute_fetchall(_sql(sql), args))

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the database thread, in one hand-off, after whatever the
        thread was given before: for what the statements above cannot do (a whole group
        commit, `persistence.snapshot_rows`' blob I/O). aiosqlite's own queue to its
        thread, which each of its calls goes through."""
        return await self._db._execute(work, self._db._conn)

    async def roll_back_if_open(self) -> None:
        await self.run(_roll_back_if_open)


class SQLiteDatabase:
    dialect = "sqlite"
    for_update = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect(
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",  # a commit is on disk before it is acknowledged
            f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}",
            "PRAGMA foreign_keys=ON",
        )
        try:
            self._reader = await self._connect("PRAGMA query_only=ON")  # it never writes
        except BaseException:
            await self.close()
            raise

    async def _connect(self, *pragmas: str) -> aiosqlite.Connection:
        try:
            db = await aiosqlite.connect(
                self.path, isolation_level=None, detect_types=sqlite3.PARSE_DECLTYPES
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        for pragma in (*pragmas, "PRAGMA busy_timeout=5000"):
            await db.execute(pragma)
        return db

    async def close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        self._writer = self._reader = None

    @staticmethod
    def _conn(db: aiosqlite.Connection | None) -> SQLiteConnection:
        if db is None:
            raise StoreError("database is not open")
        return SQLiteConnection(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteConnection]:
        async with self._write_lock:
            async with self._begun(self._writer, "BEGIN IMMEDIATE") as conn:
                yield conn

    @asynccontextmanager
    async def read_transaction(self) -> AsyncIterator[SQLiteConnection]:
        # A deferred BEGIN on the reader: its first read fixes the snapshot (WAL).
        async with self._read_lock:
            async with self._begun(self._reader, "BEGIN") as conn:
                yield conn

    @asynccontextmanager
    async def _begun(
        self, db: aiosqlite.Connection | None, begin: str
    ) -> AsyncIterator[SQLiteConnection]:
        conn = self._conn(db)
        try:
            await conn.execute(begin)
            yield conn
            await conn.execute("COMMIT")
        except BaseException:
            # A cancelled await does not take back a statement the database thread
            # was given (a BEGIN or COMMIT still runs): unless the rollback waits for
            # it, the next BEGIN fails, and a failed ROLLBACK hides the cancel.
            await conn.roll_back_if_open()
            raise

    async def run_transaction(
        self, work: Callable[[sqlite3.Connection], T], *, foreign_keys: bool = True
    ) -> T:
        """Run `work` in one write transaction on the database thread, in one hand-off
        (through `transaction()` every statement is a hand-off of its own: a hot path
        such as the group commit pays that per batch). `work` must not block on the
        event loop; statements use `?N` parameters (see `sql`).

        `foreign_keys=False`: `work` checks its rows' references itself. A statement
        writing several rows that SQLite's immediate checks could abort copies every
        page it changes to a statement journal first, to undo only itself."""
        run = partial(_in_transaction, work=work, foreign_keys=foreign_keys)
        async with self._write_lock:
            return await self._conn(self._writer).run(run)

    sql = staticmethod(_sql)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._write_lock:
            return await self._conn(self._writer).execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        async with self._read_lock:
            return await self._conn(self._reader).fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        async with self._read_lock:
            return await self._conn(self._reader).fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._read_lock:
            return await self._conn(self._reader).fetchval(sql, *args)
