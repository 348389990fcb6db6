"""The `corrections` table: every repair the server made, written once for both SQL
backends (`blackboard.persistence.database.Database`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blackboard.persistence.database import Database, Row


@dataclass(frozen=True)
class CorrectionRecord:
    project_id: str
    seq: int  # the update that broke a rule
    n: int  # its place among that update's repairs
    actor: str  # who sent that update
    path: str  # e.g. shots/S1/duration_s
    rule: str
    before: Any  # JSON
    after: Any  # JSON; None when the value was removed
    created_at: datetime


_COLUMNS = 'project_id, seq, n, actor, path, rule, "before", "after", created_at'


class CorrectionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, records: Sequence[CorrectionRecord]) -> None:
        """Insert in one transaction; a row already there (a retried batch) is kept."""
        await self.db.executemany(
            f"INSERT INTO corrections ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT DO NOTHING",
            [
                (
                    r.project_id,
                    r.seq,
                    r.n,
                    r.actor,
                    r.path,
                    r.rule,
                    json.dumps(r.before),
                    json.dumps(r.after),
                    r.created_at,
                )
                for r in records
            ],
        )

    async def page(
        self, project_id: str, after: tuple[int, int] | None, limit: int
    ) -> list[CorrectionRecord]:
        """Oldest first, starting after the (seq, n) position `after`."""
        seq, n = after or (0, -1)
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM corrections"
            " WHERE project_id = $1 AND (seq > $2 OR (seq = $2 AND n > $3))"
            " ORDER BY seq, n LIMIT $4",
            project_id,
            seq,
            n,
            limit,
        )
        return [_record(row) for row in rows]


def _record(row: Row) -> CorrectionRecord:
    return CorrectionRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        json.loads(row[6]),
        json.loads(row[7]),
        row[8],
    )
