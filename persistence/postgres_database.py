"""Postgres through an asyncpg pool behind `blackboard.persistence.database.Database`.

A connection the server dropped (`pg_terminate_backend`, a restart, a proxy timeout)
can sit in the pool looking open: the server's FATAL message has arrived, its end of
stream not yet, and asyncpg now refuses to start anything on it ("cannot switch to
state 12; another operation (2) is in progress"). Nothing was sent, so the operation is
safe to run again: the connection is terminated (never handed out again) and the work
starts over on another one, up to once per pooled connection. Inside a transaction the
work done so far is lost with the connection: the caller gets `ConnectionDropped`.
Work cancelled or timed out terminates its connection too (a statement may still be
running on it), rather than wait for the cancellation and reset it. A
connection dropped after the work is done fails its reset on release: asyncpg
terminates it, and the finished work stands (its error is not the work's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from blackboard.persistence.errors import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")
# Work cancelled or timed out may leave its statement running on the connection.
_INTERRUPTED = (asyncio.CancelledError, TimeoutError)


class ConnectionDropped(StoreError):
    """The server had dropped the connection before the operation could start."""


def _not_started(exc: BaseException) -> bool:
    """Whether asyncpg refused to start an operation on a connection that is not idle:
    nothing was sent. (asyncpg says so only in the message of `_set_state`.)"""
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith(
        "cannot switch to state"
    )


async def _checked(conn: asyncpg.Connection, work: Awaitable[T]) -> T:
    """`work` on `conn`; a connection that could not start it is terminated."""
    try:
        return await work
    except asyncpg.InternalClientError as exc:
        if not _not_started(exc):
            raise
        conn.terminate()
        # Not chained: asyncpg's words ("another operation is in progress") would send
        # a reader after a concurrency bug that is not there.
        raise ConnectionDropped(
            "the database had dropped the connection; it is closed, not reused"
        ) from None


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3" or "INSERT 0 1".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresConnection:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await _checked(self._conn, self._conn.execute(sql, *args)))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await _checked(self._conn, self._conn.executemany(sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await _checked(self._conn, self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await _checked(self._conn, self._conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await _checked(self._conn, self._conn.fetchval(sql, *args))

    async def rows_apart(self, sql: str, *args: Any) -> AsyncIterator[asyncpg.Record]:
        """The rows of `sql`, one per round trip (a cursor: inside a transaction only),
        so that each big row is decoded in a loop step of its own."""
        cursor = await _checked(self._conn, self._conn.cursor(sql, *args))
        while (row := await _checked(self._conn, cursor.fetchrow())) is not None:
            yield row

    async def copy_in(self, table: str, data: AsyncIterable[bytes | memoryview]) -> None:
        """`COPY table FROM STDIN (FORMAT binary)`, sending `data`'s chunks as they come:
        each is one step of the loop, where binding a big value is one long one."""
        await _checked(self._conn, self._conn.copy_to_table(table, source=data, format="binary"))


class PostgresDatabase:
    dialect = "postgres"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, *, pool_size: int = 10, command_timeout_s: float = 30.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                command_timeout=self.command_timeout_s,
                # Durable acks follow the commit: never let a session relax this.
                server_settings={"synchronous_commit": "on"},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to Postgres: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("database is not open")
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresConnection]:
        async with self._transaction() as conn:
            yield conn

    @asynccontextmanager
    async def read_transaction(self) -> AsyncIterator[PostgresConnection]:
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            yield conn

    @asynccontextmanager
    async def _acquired(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self.pool.acquire()
        try:
            yield conn
        except _INTERRUPTED:
            conn.terminate()  # an operation may still run on it: never hand it out again
            raise
        finally:
            try:
                await self.pool.release(conn)
            except Exception as exc:  # the reset failed: asyncpg terminated it
                log.info("a database connection failed its reset and was closed (%s)", type(exc))

    @asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[PostgresConnection]:
        for attempt in itertools.count(1):
            async with self._acquired() as conn:
                transaction = conn.transaction(**options)
                try:
                    await _checked(conn, transaction.start())
                except ConnectionDropped:
                    if attempt > self.pool_size:
                        raise
                    continue  # nothing was sent: begin again on another connection
                try:
                    yield PostgresConnection(conn)
                except (ConnectionDropped, *_INTERRUPTED):
                    raise  # terminated: the server rolls the transaction back
                except BaseException:
                    # On a connection that is gone the server rolled back already; the
                    # error that says why is the one to keep.
                    with contextlib.suppress(
                        asyncpg.InterfaceError, asyncpg.PostgresConnectionError, ConnectionDropped
                    ):
                        await _checked(conn, transaction.rollback())
                    raise
                await _checked(conn, transaction.commit())
                return

    async def _single(self, work: Callable[[PostgresConnection], Awaitable[T]]) -> T:
        """One statement on its own, begun again if its connection had been dropped."""
        attempt = 0
        while True:
            async with self._acquired() as conn:
                try:
                    return await work(PostgresConnection(conn))
                except ConnectionDropped:
                    attempt += 1
                    if attempt > self.pool_size:
                        raise

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._single(lambda conn: conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._single(lambda conn: conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._single(lambda conn: conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._single(lambda conn: conn.fetchval(sql, *args))
