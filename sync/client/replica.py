"""The agent's local replica: a SQLite file holding the document and the work not yet
acknowledged by the server (local updates, queued budget and lease calls).

Local updates are written synchronously, in the Doc observer of the edit, so the edit
does not return before its bytes are on disk (WAL, synchronous=FULL: one fsync per
transaction). Everything else (remote updates, ack marks, snapshots, calls) is written
from a worker thread. One connection, one lock: writes from the event loop and from the
worker thread never interleave inside a transaction. Row ids are AUTOINCREMENT, never
reused, so an id is a watermark ("every local update up to row N is acknowledged").
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL, upto INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL, pending INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_pending ON updates (pending, id);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    after_row INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class StoredCall:
    call_id: int
    path: str  # relative to the project, e.g. "budget/ops"
    body: str  # JSON, with its idempotency_key
    created_at: float  # unix time the key was written
    after_row: int  # local updates up to this row go out before the call


class Replica:
    def __init__(self, path: str | Path | None = None) -> None:
        """`path` None: an in-memory replica (nothing survives the process)."""
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            check_same_thread=False,  # used from the loop and from worker threads
            isolation_level=None,  # explicit transactions
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)
        self.rows_since_snapshot = self._scalar("SELECT count(*) FROM updates") or 0

    def _scalar(self, sql: str, *args: object) -> int | None:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- the document ------------------------------------------------------

    def load(self) -> tuple[list[bytes], list[tuple[int, bytes]]]:
        """The updates that rebuild the document (snapshot first), and the pending rows."""
        with self._lock:
            snap = self._db.execute("SELECT state FROM snapshot").fetchone()
            rows = self._db.execute("SELECT id, data, pending FROM updates ORDER BY id").fetchall()
        updates = ([snap[0]] if snap else []) + [r[1] for r in rows]
        return updates, [(r[0], r[1]) for r in rows if r[2]]

    def append_local(self, update: bytes) -> int:
        """Durably store a local update not yet acknowledged; its row id."""
        with self._transaction() as db:
            row_id = db.execute(
                "INSERT INTO updates (data, pending) VALUES (?, 1)", (update,)
            ).lastrowid
            self.rows_since_snapshot += 1
        assert row_id is not None
        return row_id

    def append_remote(self, updates: list[bytes]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO updates (data, pending) VALUES (?, 0)", [(u,) for u in updates]
            )
            self.rows_since_snapshot += len(updates)

    def mark_acked(self, upto_row: int, *, keep: bool = True) -> None:
        """The local updates up to `upto_row` are on the server: keep them as part of the
        document (until the next snapshot), or forget them (a replica of pending work only)."""
        with self._transaction() as db:
            if keep:
                db.execute(
                    "UPDATE updates SET pending = 0 WHERE pending = 1 AND id <= ?", (upto_row,)
                )
            else:
                db.execute("DELETE FROM updates WHERE id <= ?", (upto_row,))

    def last_row(self) -> int:
        with self._lock:
            return self._scalar("SELECT seq FROM sqlite_sequence WHERE name = 'updates'") or 0

    def write_snapshot(self, state: bytes, upto_row: int) -> None:
        """`state` holds every update up to `upto_row`; forget the acknowledged ones."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshot (id, state, upto) VALUES (1, ?, ?)",
                (state, upto_row),
            )
            db.execute("DELETE FROM updates WHERE pending = 0 AND id <= ?", (upto_row,))
            self.rows_since_snapshot = db.execute("SELECT count(*) FROM updates").fetchone()[0]

    def pending_rows(self) -> int:
        with self._lock:
            return self._scalar("SELECT count(*) FROM updates WHERE pending = 1") or 0

    # --- meta --------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- calls -------------------------------------------------------------

    def add_call(self, path: str, body: str, created_at: float, after_row: int) -> int:
        with self._transaction() as db:
            call_id = db.execute(
                "INSERT INTO calls (path, body, created_at, after_row) VALUES (?, ?, ?, ?)",
                (path, body, created_at, after_row),
            ).lastrowid
        assert call_id is not None
        return call_id

    def remove_call(self, call_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM calls WHERE id = ?", (call_id,))

    def calls(self) -> list[StoredCall]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path, body, created_at, after_row FROM calls ORDER BY id"
            ).fetchall()
        return [StoredCall(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
