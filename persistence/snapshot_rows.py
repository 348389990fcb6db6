"""Reading and writing a snapshot's row, for `DocumentStore`.

A snapshot's state can be 20 MB. sqlite3 copies a selected blob into Python, and a bound
one into SQLite, holding the GIL: the serving loop stood still for 20-60 ms whenever a
big document was compacted or loaded cold (bench/RESULTS.md, no stalls). On SQLite the
state goes through an incremental blob handle instead, which copies with the GIL let go
(`schemas/migrations/sqlite/0009`: the table has rowids for it). Postgres reads and
writes it as a plain column; asyncpg decodes it on the loop as it arrives.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from blackboard.persistence.database import Connection
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


async def newest_snapshot(conn: Connection, project_id: str, upto_seq: int) -> Snapshot | None:
    """The newest snapshot of `project_id` covering at most `upto_seq`, if any."""
    if isinstance(conn, SQLiteConnection):
        return await conn.run(lambda db: _newest_sqlite(db, project_id, upto_seq))
    row = await conn.fetchrow(f"SELECT {_COLUMNS}, state{_NEWEST}", project_id, upto_seq)
    return None if row is None else _snapshot(row[0], row[1], row[2], row[3], row[4])


async def insert_snapshot(conn: Connection, project_id: str, snapshot: Snapshot) -> bool:
    """Insert `snapshot` unless one up to the same seq exists; whether it was inserted."""
    if isinstance(conn, SQLiteConnection):
        return await conn.run(lambda db: _insert_sqlite(db, project_id, snapshot))
    inserted = await conn.execute(
        _INSERT.format(state="$6"), project_id, *_fields(snapshot), snapshot.state
    )
    return bool(inserted)


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
