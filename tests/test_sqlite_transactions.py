"""The embedded database's transactions: a write whose COMMIT fails is rolled back, so
the next transaction starts (SQLite leaves a transaction open after some failed COMMITs,
a deferred constraint's or a busy database's); reads and writes never wait for each
other (under load the group commit queued behind room loads' reads for seconds)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from blackboard.persistence import sqlite_database
from blackboard.persistence.errors import StoreError
from blackboard.persistence.sqlite_database import SQLiteDatabase


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteDatabase]:
    db = SQLiteDatabase(tmp_path / "t.db")
    await db.open()
    await db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    await db.execute(
        "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    try:
        yield db
    finally:
        await db.close()


def orphan(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO child VALUES (7)")  # checked at COMMIT, which fails


async def test_a_failed_commit_in_run_transaction_leaves_no_transaction_open(
    db: SQLiteDatabase,
) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await db.run_transaction(orphan)
    await db.run_transaction(lambda conn: conn.execute("INSERT INTO parent VALUES (1)"))
    assert await db.fetchval("SELECT count(*) FROM child") == 0
    assert await db.fetchval("SELECT count(*) FROM parent") == 1


async def test_a_failed_commit_in_transaction_leaves_no_transaction_open(
    db: SQLiteDatabase,
) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO child VALUES (7)")
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO parent VALUES (1)")
    assert await db.fetchval("SELECT count(*) FROM child") == 0
    assert await db.fetchval("SELECT count(*) FROM parent") == 1


async def test_a_transaction_without_foreign_keys_turns_them_back_on(
    db: SQLiteDatabase,
) -> None:
    """`foreign_keys=False` (the group commit checks its references itself) holds for
    that one transaction, whether it commits or fails."""
    await db.execute("CREATE TABLE pinned (parent INTEGER REFERENCES parent (id))")

    def pin(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO pinned VALUES (7)")

    def fail(conn: sqlite3.Connection) -> None:
        pin(conn)
        raise ZeroDivisionError

    await db.run_transaction(pin, foreign_keys=False)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await db.run_transaction(pin)
    with pytest.raises(ZeroDivisionError):
        await db.run_transaction(fail, foreign_keys=False)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await db.run_transaction(pin)
    assert await db.fetchval("SELECT count(*) FROM pinned") == 1


async def test_a_write_commits_while_a_read_is_held_open(db: SQLiteDatabase) -> None:
    release, began = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def slow_reader() -> None:
        async with db.read_transaction() as conn:
            seen.append(await conn.fetchval("SELECT count(*) FROM parent"))
            began.set()
            await release.wait()
            # The snapshot taken by the first read holds: the write below is not seen.
            seen.append(await conn.fetchval("SELECT count(*) FROM parent"))

    reader = asyncio.create_task(slow_reader())
    await asyncio.wait_for(began.wait(), 5)
    await asyncio.wait_for(
        db.run_transaction(lambda conn: conn.execute("INSERT INTO parent VALUES (1)")), 5
    )
    release.set()
    await asyncio.wait_for(reader, 5)
    assert seen == [0, 0]
    assert await db.fetchval("SELECT count(*) FROM parent") == 1


async def test_a_read_answers_while_a_write_is_held_open(db: SQLiteDatabase) -> None:
    release = asyncio.Event()
    began = asyncio.Event()

    async def slow_writer() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO parent VALUES (1)")
            began.set()
            await release.wait()

    writer = asyncio.create_task(slow_writer())
    await asyncio.wait_for(began.wait(), 5)
    # Not committed yet: the reader sees the last committed state, at once.
    assert await asyncio.wait_for(db.fetchval("SELECT count(*) FROM parent"), 5) == 0
    release.set()
    await asyncio.wait_for(writer, 5)
    assert await db.fetchval("SELECT count(*) FROM parent") == 1


async def test_the_reader_refuses_writes(db: SQLiteDatabase) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        async with db.read_transaction() as conn:
            await conn.execute("INSERT INTO parent VALUES (1)")
    assert await db.fetchval("SELECT count(*) FROM parent") == 0


async def test_a_reader_that_fails_to_open_closes_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault that cannot be caused for the reader alone (the writer opened the same
    file a moment before), so it is injected: the open fails whole and leaks nothing."""
    opened: list[aiosqlite.Connection] = []
    connect = aiosqlite.connect

    async def second_fails(*args: object, **kwargs: object) -> aiosqlite.Connection:
        if opened:
            raise sqlite3.OperationalError("unable to open database file")
        opened.append(await connect(*args, **kwargs))  # type: ignore[arg-type]
        return opened[0]

    monkeypatch.setattr(sqlite_database.aiosqlite, "connect", second_fails)
    db = SQLiteDatabase(tmp_path / "t.db")
    with pytest.raises(StoreError, match="cannot open"):
        await db.open()
    with pytest.raises(ValueError, match="no active connection"):  # closed, not leaked
        await opened[0].execute("SELECT 1")
    monkeypatch.undo()
    await db.open()  # and the next open starts clean
    try:
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def _cancelled_after(turns: int, work: Coroutine[Any, Any, None]) -> object:
    """Run `work`, cancel it after `turns` turns of the loop, and say how it ended:
    done (None) or cancelled, never another error in place of the cancel."""
    task = asyncio.create_task(work)
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert outcome is None or isinstance(outcome, asyncio.CancelledError), outcome
    return outcome


@pytest.mark.parametrize("turns", range(40))
async def test_a_transaction_cancelled_at_any_await_ends_clean(
    db: SQLiteDatabase, turns: int
) -> None:
    """A cancelled await does not stop a statement the database thread has taken: a
    cancel landing on BEGIN left the transaction open (every later BEGIN failed), and
    one landing on COMMIT raised "no transaction is active" in place of the cancel, so
    a loop that retries on errors (the expiry sweeper) never stopped."""

    async def write() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO parent VALUES (1)")

    outcome = await _cancelled_after(turns, write())
    async with db.transaction() as conn:  # the writer is usable, nothing left open
        await conn.execute("INSERT INTO parent VALUES (2)")
    assert await db.fetchval("SELECT count(*) FROM parent WHERE id = 2") == 1
    if outcome is None:  # it said it committed (a cancelled one may have, too)
        assert await db.fetchval("SELECT count(*) FROM parent WHERE id = 1") == 1


@pytest.mark.parametrize("turns", range(30))
async def test_a_read_cancelled_at_any_await_ends_clean(db: SQLiteDatabase, turns: int) -> None:
    """The same on the reader: left open, its snapshot would have answered every later
    read with the data of that moment, and kept the WAL from being checkpointed."""

    async def read() -> None:
        async with db.read_transaction() as conn:
            await conn.fetchval("SELECT count(*) FROM parent")

    await _cancelled_after(turns, read())
    await db.execute("INSERT INTO parent VALUES (3)")
    async with db.read_transaction() as conn:  # a fresh snapshot, not a stale one
        assert await conn.fetchval("SELECT count(*) FROM parent") == 1
