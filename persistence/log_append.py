"""Appending one group-commit batch to `doc_updates`, for `DocumentStore.append`.

Each project's run of rows takes a block of seqs from its counter in `projects`. The
counter row stays locked until COMMIT, so per project the seqs are gap-free and increase
in commit order, even with several writer processes: whatever a reader sees committed is
always a prefix 1..N of the log.

Postgres does the whole batch in one statement (one round trip, atomic on its own):
lock the counters in id order (so writers whose batches share projects queue instead of
deadlocking), bump them, insert every row from arrays. SQLite has one writer, so a plain
transaction with one UPDATE for all the batch's counters and multi-row INSERTs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from itertools import groupby

from blackboard.persistence.clock import to_iso, utc_now
from blackboard.persistence.database import Database
from blackboard.persistence.errors import ProjectNotFound
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.sqlite_database import SQLiteDatabase

_POSTGRES_APPEND = """
WITH locked AS MATERIALIZED (
    -- a join, not `= ANY($1)`: a parameter array is searched linearly for every row
    SELECT p.project_id FROM projects AS p JOIN unnest($1::text[]) AS w(project_id)
        ON p.project_id = w.project_id
    ORDER BY p.project_id FOR NO KEY UPDATE OF p  -- what the UPDATE takes; FK checks pass
), bumped AS (
    UPDATE projects AS p SET seq = p.seq + r.n
    FROM unnest($1::text[], $2::bigint[]) AS r(project_id, n)
    WHERE p.project_id = r.project_id AND p.project_id IN (SELECT project_id FROM locked)
    RETURNING p.project_id, p.seq, r.n
), inserted AS (
    INSERT INTO doc_updates (project_id, seq, "update", actor, status_epochs, created_at)
    SELECT r.project_id, b.seq - b.n + r.k, r.update, r.actor, r.status_epochs, $8
    FROM unnest($3::text[], $4::bigint[], $5::bytea[], $6::text[], $7::bytea[])
        AS r(project_id, k, update, actor, status_epochs)
    LEFT JOIN bumped AS b USING (project_id)  -- a missing project: NULL seq, all fails
)
SELECT project_id, seq FROM bumped
"""

# Bump every counter of the batch at once: `$1` is a JSON object {project_id: rows}.
# OR ROLLBACK on both statements, with the foreign keys checked here instead of by
# SQLite: a statement that could fail alone journals every page it changes first, so
# that it can be undone without the rest of its transaction (the group commit's
# INSERT wrote as many pages to that journal as to the WAL). A batch fails whole anyway.
_SQLITE_BUMP = """
UPDATE OR ROLLBACK projects SET seq = seq + j.value
FROM json_each($1) AS j
WHERE projects.project_id = j.key
RETURNING project_id, seq
"""

_SQLITE_INSERT = (
    "INSERT OR ROLLBACK INTO doc_updates"
    ' (project_id, seq, "update", actor, status_epochs, created_at)'
)
_SQLITE_ROW = "(?, ?, ?, ?, ?, ?)"
# Rows per INSERT: one statement steps once for all its rows. sqlite3 lets go of the GIL
# around every step, and each step taken back while the event loop runs Python is a
# thread switch (executemany steps once per row). 6 parameters a row stay far below
# SQLite's limit of 32,766.
SQLITE_ROWS_PER_INSERT = 1000
# sqlite3 caches a statement per text (128 of them, LRU), one per batch size here, and
# each keeps a copy of the blobs it was last run with: batches of 16 KiB updates left
# 80+ MiB held after a hundred sizes. A batch carrying more than this is inserted by
# statements that then run again with NULLs and insert nothing, which lets go of their
# copies; smaller ones (most batches) skip that step, so at most 128 x this stays held.
SQLITE_RELEASE_AFTER_BYTES = 64 * 1024

_EXISTING = "SELECT project_id FROM projects WHERE project_id = ANY($1::text[])"


async def append_batch(db: Database, batch: Sequence[PendingAppend]) -> list[int]:
    """Commit `batch` (each project's rows contiguous); return the seqs in batch order."""
    runs = [(project_id, len(list(run))) for project_id, run in groupby(batch, _project_of)]
    if len({project_id for project_id, _ in runs}) != len(runs):
        raise ValueError("the rows of one project must be contiguous in a batch")
    if db.dialect == "postgres":
        lasts = await _append_postgres(db, batch, runs)
    elif isinstance(db, SQLiteDatabase):
        lasts = await _append_sqlite(db, batch, runs)
    else:
        raise TypeError(f"no append for a {db.dialect} database")
    seqs: list[int] = []
    for project_id, count in runs:
        seqs.extend(range(lasts[project_id] - count + 1, lasts[project_id] + 1))
    return seqs


async def _append_postgres(
    db: Database, batch: Sequence[PendingAppend], runs: list[tuple[str, int]]
) -> dict[str, int]:
    ids = [project_id for project_id, _ in runs]
    try:
        rows = await db.fetch(
            _POSTGRES_APPEND,
            ids,
            [count for _, count in runs],
            [row.project_id for row in batch],
            [k for _, count in runs for k in range(1, count + 1)],
            [row.update for row in batch],
            [row.actor for row in batch],
            [row.status_epochs for row in batch],
            utc_now(),
        )
    except Exception:
        # The statement is atomic: nothing was stored. Say so if a project is missing
        # (retrying would never help); otherwise it is the database's error.
        found = {row[0] for row in await db.fetch(_EXISTING, ids)}
        _check_all_found(runs, dict.fromkeys(found, 0))
        raise
    return {row[0]: row[1] for row in rows}


async def _append_sqlite(
    db: SQLiteDatabase, batch: Sequence[PendingAppend], runs: list[tuple[str, int]]
) -> dict[str, int]:
    # One hand-off to the database thread for the whole batch: when updates arrive one
    # at a time, every batch is one row, and each hand-off costs more than the row.
    now = to_iso(utc_now())
    bump = db.sql(_SQLITE_BUMP)

    def append(conn: sqlite3.Connection) -> dict[str, int]:
        # One UPDATE for every project of the batch: a batch may span a thousand projects.
        lasts: dict[str, int] = dict(conn.execute(bump, (json.dumps(dict(runs)),)).fetchall())
        _check_all_found(runs, lasts)  # every row's reference; raising rolls all back
        values: list[object] = []
        start = carried = 0
        for project_id, count in runs:
            first = lasts[project_id] - count + 1
            for k, row in enumerate(batch[start : start + count]):
                values += (project_id, first + k, row.update, row.actor, row.status_epochs, now)
                carried += len(row.update) + len(row.status_epochs)
            start += count
        release = carried > SQLITE_RELEASE_AFTER_BYTES
        width = 6 * SQLITE_ROWS_PER_INSERT
        for at in range(0, len(values), width):
            _insert_rows(conn, values[at : at + width], release=release)
        return lasts

    return await db.run_transaction(append, foreign_keys=False)


def _insert_rows(conn: sqlite3.Connection, values: list[object], *, release: bool) -> None:
    rows = ", ".join([_SQLITE_ROW] * (len(values) // 6))
    if not release:
        conn.execute(f"{_SQLITE_INSERT} VALUES {rows}", values)
        return
    # Rows behind `WHERE ?`: the same statement can run with NULLs and insert nothing.
    # (Not for every batch: SQLite reads such rows through a subquery, 10-20% slower.)
    insert = f"{_SQLITE_INSERT} SELECT * FROM (VALUES {rows}) WHERE ?"
    conn.execute(insert, [*values, True])
    conn.execute(insert, [*[None] * len(values), False])


def _check_all_found(runs: list[tuple[str, int]], lasts: dict[str, int]) -> None:
    for project_id, _ in runs:
        if project_id not in lasts:
            raise ProjectNotFound(project_id)


def _project_of(row: PendingAppend) -> str:
    return row.project_id
