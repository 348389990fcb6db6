"""Reading and writing a snapshot's row, for `DocumentStore`.

A snapshot's state can be 20 MB, and its row is read and written on the serving loop,
where every other room waits for each step (bench/RESULTS.md, no stalls;
`python -m bench.snapshot_stall`).

- SQLite: sqlite3 copies a selected blob into Python, and a bound one into SQLite,
  holding the GIL (20-60 ms for 20 MB). The state goes through an incremental blob
  handle instead, which copies with the GIL let go
  (`schemas/migrations/sqlite/0009`: the table has rowids for it).
- Postgres: asyncpg encodes a bound value, and decodes a received one, in one step
  (about 20 ms each for 20 MB). A state above `STATE_PIECE_BYTES` is written by COPY,
  a piece per step, into a temporary table the insert takes it from; and read through
  a cursor a piece per round trip, from one copy the server detoasts once, then joined
  off the loop (`bytes.join` lets go of the GIL for big results).
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import AsyncIterator
from datetime import datetime

from blackboard.persistence.database import Connection
from blackboard.persistence.postgres_database import PostgresConnection
from blackboard.persistence.records import Snapshot
from blackboard.persistence.sqlite_database import SQLiteConnection, SQLiteDatabase

_COLUMNS = "upto_seq, state_vector, created_at, status_epochs"
_NEWEST = (
    " FROM doc_snapshots WHERE project_id = $1 AND upto_seq <= $2 ORDER BY upto_seq DESC LIMIT 1"
)
_INSERT = (
    "INSERT INTO doc_snapshots"
    " (project_id, upto_seq, state_vector, created_at, status_epochs, state)"
    " VALUES ($1, $2, $3, $4, $5, {state}) ON CONFLICT DO NOTHING"
)
# Postgres: a state above this size is read and written in pieces of this size.
STATE_PIECE_BYTES = 1024 * 1024
_SMALL_STATE = "CASE WHEN octet_length(state) <= $3 THEN state END"
# `state || ''` makes the one detoasted copy the pieces are cut from: a slice of a
# compressed value would decompress everything before it, every time.
_PIECES = """
WITH whole AS MATERIALIZED (
    SELECT state || ''::bytea AS state FROM doc_snapshots WHERE project_id = $1 AND upto_seq = $2
)
SELECT substring(whole.state FROM n * $3 + 1 FOR $3)
FROM whole, generate_series(0, (octet_length(whole.state) - 1) / $3) AS n ORDER BY n
"""
_UPLOAD_TABLE = "snapshot_upload"
_CREATE_UPLOAD = f"CREATE TEMP TABLE {_UPLOAD_TABLE} (state bytea NOT NULL) ON COMMIT DROP"
_UPLOADED = f"(SELECT state FROM {_UPLOAD_TABLE})"
# COPY's binary format (Postgres docs, "COPY"): signature, flags, header extension size.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


async def newest_snapshot(conn: Connection, project_id: str, upto_seq: int) -> Snapshot | None:
    """The newest snapshot of `project_id` covering at most `upto_seq`, if any."""
    if isinstance(conn, SQLiteConnection):
        return await conn.run(lambda db: _newest_sqlite(db, project_id, upto_seq))
    assert isinstance(conn, PostgresConnection)  # the only other backend
    return await _newest_postgres(conn, project_id, upto_seq)


async def insert_snapshot(conn: Connection, project_id: str, snapshot: Snapshot) -> bool:
    """Insert `snapshot` unless one up to the same seq exists; whether it was inserted.
    `conn` is in a transaction (a big state's temporary table lives until its end)."""
    if isinstance(conn, SQLiteConnection):
        return await conn.run(lambda db: _insert_sqlite(db, project_id, snapshot))
    assert isinstance(conn, PostgresConnection)  # the only other backend
    return await _insert_postgres(conn, project_id, snapshot)


async def _insert_postgres(conn: PostgresConnection, project_id: str, snapshot: Snapshot) -> bool:
    if len(snapshot.state) <= STATE_PIECE_BYTES:
        sql = _INSERT.format(state="$6")
        return bool(await conn.execute(sql, project_id, *_fields(snapshot), snapshot.state))
    await conn.execute(_CREATE_UPLOAD)
    await conn.copy_in(_UPLOAD_TABLE, _copy_rows(snapshot.state))
    sql = _INSERT.format(state=_UPLOADED)
    return bool(await conn.execute(sql, project_id, *_fields(snapshot)))


async def _copy_rows(state: bytes) -> AsyncIterator[bytes | memoryview]:
    """COPY's binary stream of one row holding `state`, in chunks of the state's bytes."""
    yield _COPY_HEADER + struct.pack("!hi", 1, len(state))  # one field, its length
    view = memoryview(state)
    for start in range(0, len(state), STATE_PIECE_BYTES):
        yield view[start : start + STATE_PIECE_BYTES]
        # asyncpg takes the next piece at once while the socket takes more: without
        # this, a loopback socket's few MB went in one step.
        await asyncio.sleep(0)
    yield _COPY_TRAILER


async def _newest_postgres(
    conn: PostgresConnection, project_id: str, upto_seq: int
) -> Snapshot | None:
    sql = f"SELECT {_COLUMNS}, {_SMALL_STATE}{_NEWEST}"
    row = await conn.fetchrow(sql, project_id, upto_seq, STATE_PIECE_BYTES)
    if row is None:
        return None
    state = row[4]
    if state is None:  # a big one; `conn`'s transaction (a cursor needs one) sees the same row
        args = (project_id, row[0], STATE_PIECE_BYTES)
        pieces = [piece async for (piece,) in conn.rows_apart(_PIECES, *args)]
        state = await asyncio.to_thread(b"".join, pieces)
    return _snapshot(row[0], row[1], row[2], row[3], state)


def _newest_sqlite(db: sqlite3.Connection, project_id: str, upto_seq: int) -> Snapshot | None:
    row = db.execute(
        SQLiteDatabase.sql(f"SELECT {_COLUMNS}, rowid{_NEWEST}"), (project_id, upto_seq)
    ).fetchone()
    if row is None:
        return None
    with db.blobopen("doc_snapshots", "state", row[4], readonly=True) as blob:
        state = blob.read()
    return _snapshot(row[0], row[1], row[2], row[3], state)


def _insert_sqlite(db: sqlite3.Connection, project_id: str, snapshot: Snapshot) -> bool:
    # Room for the state first (zeroblob: no copy of it bound to the statement), then
    # the state written into that room.
    cursor = db.execute(
        SQLiteDatabase.sql(_INSERT.format(state="zeroblob($6)")),
        (project_id, *_fields(snapshot), len(snapshot.state)),
    )
    if not cursor.rowcount:
        return False
    with db.blobopen("doc_snapshots", "state", cursor.lastrowid) as blob:
        blob.write(snapshot.state)
    return True


def _fields(snapshot: Snapshot) -> tuple[int, bytes, datetime, bytes]:
    return snapshot.upto_seq, snapshot.state_vector, snapshot.created_at, snapshot.status_epochs


def _snapshot(
    upto_seq: int, state_vector: bytes, created_at: datetime, status_epochs: bytes, state: bytes
) -> Snapshot:
    return Snapshot(upto_seq, state, state_vector, created_at, status_epochs)
