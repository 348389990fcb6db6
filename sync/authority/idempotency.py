"""Idempotency keys: the first response to a key, stored in the transaction that made it.

A retry with the same key and the same request gets that response again (status and
body); the same key with a different request is refused and changes nothing. Callers
look keys up only while holding the lock that orders their writes (the budget account
row, the lease row), so two concurrent requests with one key cannot both run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from blackboard.persistence.database import Connection, Database
from blackboard.persistence.in_list import padded_in

# A retry within a week is always a replay: agents stay offline for long, and their
# queued calls go out with their first key (BLACKBOARD_IDEMPOTENCY_TTL_S).
KEY_RETENTION_S = 7 * 24 * 3600.0
MAX_KEY_LENGTH = 255

T = TypeVar("T")


@dataclass(frozen=True)
class Reply(Generic[T]):
    """What an authoritative op answers; `effect` is set when it changed something."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    effect: T | None = None


@dataclass(frozen=True)
class StoredKey:
    request_hash: str
    status: int
    body: dict[str, Any]

    def answer(self, request_hash: str, key: str) -> Reply[Any]:
        """The replay of this key to a request with `request_hash`."""
        if request_hash != self.request_hash:
            return conflict(key)
        return Reply(self.status, self.body, replayed=True)


def request_hash(fields: tuple[str | int | float | None, ...]) -> str:
    """A digest of a request's fields, in a fixed order (repr is unambiguous for these)."""
    return hashlib.sha256(repr(fields).encode()).hexdigest()


def conflict(key: str) -> Reply[Any]:
    return Reply(
        409,
        {
            "error": "idempotency_conflict",
            "detail": f"idempotency_key {key!r} was already used for a different request",
        },
    )


async def find_keys(
    conn: Connection, project_id: str, scope: str, keys: Iterable[str]
) -> dict[str, StoredKey]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    marks, values = padded_in(wanted, 3)
    rows = await conn.fetch(
        "SELECT idempotency_key, request_hash, status, response FROM idempotency_keys"
        f" WHERE project_id = $1 AND scope = $2 AND idempotency_key IN {marks}",
        project_id,
        scope,
        *values,
    )
    return {r[0]: StoredKey(r[1], r[2], json.loads(r[3])) for r in rows}


@dataclass(frozen=True)
class NewKey:
    project_id: str
    scope: str
    key: str
    stored: StoredKey

    def row(self, now: datetime) -> tuple[str, str, str, str, int, str, datetime]:
        """The `idempotency_keys` row, columns in KEY_COLUMNS order."""
        response = json.dumps(self.stored.body, separators=(",", ":"))
        return (
            self.project_id,
            self.scope,
            self.key,
            self.stored.request_hash,
            self.stored.status,
            response,
            now,
        )


KEY_COLUMNS = "project_id, scope, idempotency_key, request_hash, status, response, created_at"


async def store_keys(conn: Connection, keys: Sequence[NewKey], now: datetime) -> None:
    if keys:
        await conn.executemany(
            f"INSERT INTO idempotency_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [k.row(now) for k in keys],
        )


async def prune_keys(db: Database, before: datetime) -> int:
    """Forget keys created before `before` (the caller keeps its retention)."""
    return await db.execute("DELETE FROM idempotency_keys WHERE created_at < $1", before)
