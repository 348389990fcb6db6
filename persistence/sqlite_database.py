"""SQLite (WAL, synchronous=FULL) behind `blackboard.persistence.database.Database`.

One connection, used by one transaction at a time (an asyncio lock): the embedded
backend serves one process, and SQLite has one writer anyway.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from blackboard.persistence.clock import from_iso, to_iso
from blackboard.persistence.errors import StoreError

_PARAM = re.compile(r"\$(\d+)")
T = TypeVar("T")

sqlite3.register_adapter(datetime, to_iso)
sqlite3.register_converter("TIMESTAMP", lambda raw: from_iso(raw.decode()))


def _sql(statement: str) -> str:
    return _PARAM.sub(r"?\1", statement)


def _in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (a deferred constraint, a busy database) may leave the
        # transaction open: every later BEGIN would fail.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class _Conn:
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


class SQLiteDatabase:
    dialect = "sqlite"
    for_update = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(
                self.path, isolation_level=None, detect_types=sqlite3.PARSE_DECLTYPES
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",  # a commit is on disk before it is acknowledged
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
        ):
            await self._db.execute(pragma)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _conn(self) -> _Conn:
        if self._db is None:
            raise StoreError("database is not open")
        return _Conn(self._db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        async with self._lock:
            conn = self._conn()
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if self._db is not None and self._db.in_transaction:  # as `_in_transaction`
                    await conn.execute("ROLLBACK")
                raise

    async def run_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction on the database thread, in one hand-off
        (through `transaction()` every statement is a hand-off of its own: a hot path
        such as the group commit pays that per batch). `work` must not block on the
        event loop; statements use `?N` parameters (see `sql`)."""
        async with self._lock:
            if self._db is None:
                raise StoreError("database is not open")
            # aiosqlite's own queue to its thread (what each of its calls goes through).
            return await self._db._execute(_in_transaction, self._db._conn, work)

    sql = staticmethod(_sql)

    def read_transaction(self) -> AbstractAsyncContextManager[_Conn]:
        # One connection used by one transaction at a time: every transaction is
        # already a consistent view.
        return self.transaction()

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._conn().execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        async with self._lock:
            return await self._conn().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        async with self._lock:
            return await self._conn().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            return await self._conn().fetchval(sql, *args)
