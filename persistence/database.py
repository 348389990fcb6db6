"""One small SQL interface over both backends, so every store is written once.

SQL uses `$1, $2` parameters (asyncpg's style; the SQLite driver maps them to `?1`).
Times are passed and returned as aware datetimes, bytes as bytes. Differences that SQL
cannot hide are on `dialect`, e.g. `for_update` is " FOR UPDATE" on Postgres and empty
on SQLite, where a write transaction (BEGIN IMMEDIATE) already excludes other writers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol


class Row(Protocol):
    def __getitem__(self, key: int | str) -> Any: ...


class Connection(Protocol):
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; return the number of rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...


# Writes more rows of a new project (connection, project_id, now) inside the transaction
# that creates it, e.g. its budget account, so the two exist together or not at all.
RowWriter = Callable[[Connection, str, datetime], Awaitable[None]]


class Database(Connection, Protocol):
    """Statements run outside `transaction()` commit on their own."""

    dialect: str  # "sqlite" or "postgres"
    for_update: str  # row-lock suffix for SELECT inside a write transaction

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction: committed on exit, rolled back on an exception."""

    def read_transaction(self) -> AbstractAsyncContextManager[Connection]:
        """Several reads that see one consistent snapshot of the database."""
