"""The embedded database's write transactions: one whose COMMIT fails is rolled back, so
the next transaction starts (SQLite leaves a transaction open after some failed COMMITs,
a deferred constraint's or a busy database's)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
