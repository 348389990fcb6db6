"""Task leases (DESIGN.md section 4), written once for both SQL backends.

One `task_leases` row per task ever leased. Each action is one transaction holding that
row's lock (`SELECT … FOR UPDATE`; SQLite: BEGIN IMMEDIATE) with its idempotency key.
`fencing_token` is the last token granted and grows by one with every claim, so a token
is never handed out twice; a holder proves it still holds the lease by its token, which
resources guarding the task's work can check too. Expiry is decided on the database's
clock, the one clock every server instance shares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from blackboard.persistence.clock import to_iso
from blackboard.persistence.database import Database, Row
from blackboard.persistence.db_clock import database_now
from blackboard.persistence.errors import StoreError, error_body
from blackboard.sync.authority.idempotency import (
    NewKey,
    Reply,
    StoredKey,
    find_keys,
    request_hash,
    store_keys,
)

ACTIONS = ("claim", "renew", "release")
DEFAULT_TTL_S = 300.0
MAX_TTL_S = 24 * 3600.0


@dataclass(frozen=True)
class LeaseRequest:
    action: str
    holder: str
    idempotency_key: str
    ttl_s: float = DEFAULT_TTL_S
    fencing_token: int | None = None

    def request_hash(self) -> str:
        return request_hash((self.action, self.holder, self.ttl_s, self.fencing_token))


@dataclass(frozen=True)
class Lease:
    project_id: str
    task_id: str
    holder: str | None  # None: free
    fencing_token: int  # the last token granted (0: never leased)
    expires_at: datetime | None
    version: int  # grows with every change, so mirrors never apply an older state

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "holder": self.holder,
            "fencing_token": self.fencing_token,
            "expires_at": to_iso(self.expires_at) if self.expires_at else None,
        }


_COLUMNS = "project_id, task_id, holder, fencing_token, expires_at, version"


def _lease(row: Row) -> Lease:
    return Lease(row[0], row[1], row[2], row[3], row[4], row[5])


def _scope(task_id: str) -> str:
    return f"lease:{task_id}"


def _decide(lease: Lease, request: LeaseRequest, now: datetime) -> Reply[Lease]:
    held = lease.holder is not None and lease.expires_at is not None and lease.expires_at > now
    until = now + timedelta(seconds=request.ttl_s)
    if request.action == "claim":
        if held:
            current = lease.to_json()
            detail = f"task {lease.task_id!r} is leased to {lease.holder!r}"
            return Reply(
                409, error_body("lease_held", f"{detail} until {current['expires_at']}", **current)
            )
        after = replace(
            lease,
            holder=request.holder,
            fencing_token=lease.fencing_token + 1,
            expires_at=until,
            version=lease.version + 1,
        )
    else:
        stale = f"fencing token {request.fencing_token} of task {lease.task_id!r}"
        if not held or request.fencing_token != lease.fencing_token:
            why = "the lease has expired" if not held else "a newer lease was granted"
            return Reply(409, error_body("stale_token", f"{stale} is stale: {why}"))
        if request.holder != lease.holder:
            whose = f"belongs to {lease.holder!r}, not {request.holder!r}"
            return Reply(409, error_body("stale_token", f"{stale} {whose}"))
        if request.action == "renew":
            after = replace(lease, expires_at=until, version=lease.version + 1)
        else:
            after = replace(lease, holder=None, expires_at=None, version=lease.version + 1)
    return Reply(200, {"action": request.action, **after.to_json()}, effect=after)


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def apply(self, project_id: str, task_id: str, request: LeaseRequest) -> Reply[Lease]:
        """Claim, renew or release; the stored reply if this key was seen already.
        StoreError if the database failed (nothing decided: retry with the same key)."""
        try:
            return await self._apply(project_id, task_id, request)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"the lease op failed: {exc}") from exc

    async def _apply(self, project_id: str, task_id: str, request: LeaseRequest) -> Reply[Lease]:
        key, fingerprint = request.idempotency_key, request.request_hash()
        async with self.db.transaction() as conn:
            # The row to lock, created on the task's first claim (a no-op afterwards).
            await conn.execute(
                "INSERT INTO task_leases (project_id, task_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                project_id,
                task_id,
            )
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM task_leases WHERE project_id = $1 AND task_id = $2"
                + self.db.for_update,
                project_id,
                task_id,
            )
            assert row is not None
            now = await database_now(conn, self.db.dialect)
            seen = (await find_keys(conn, project_id, _scope(task_id), [key])).get(key)
            if seen is not None:
                return seen.answer(fingerprint, key)
            reply = _decide(_lease(row), request, now)
            if reply.effect is not None:
                after = reply.effect
                await conn.execute(
                    "UPDATE task_leases SET holder = $3, fencing_token = $4, expires_at = $5,"
                    " version = $6 WHERE project_id = $1 AND task_id = $2",
                    project_id,
                    task_id,
                    after.holder,
                    after.fencing_token,
                    after.expires_at,
                    after.version,
                )
            stored = StoredKey(fingerprint, reply.status, reply.body)
            await store_keys(conn, [NewKey(project_id, _scope(task_id), key, stored)], now)
        return reply

    async def expire_due(self) -> list[Lease]:
        """Free every lease past its expiry (database clock); the freed leases."""
        async with self.db.transaction() as conn:
            now = await database_now(conn, self.db.dialect)
            # One conditional statement: a renew that got the row lock first moved the
            # expiry, and the re-checked condition then leaves that lease alone.
            rows = await conn.fetch(
                "UPDATE task_leases SET holder = NULL, expires_at = NULL, version = version + 1"
                f" WHERE holder IS NOT NULL AND expires_at <= $1 RETURNING {_COLUMNS}",
                now,
            )
        return [_lease(row) for row in rows]

    async def leases(self, project_id: str) -> list[Lease]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM task_leases WHERE project_id = $1 ORDER BY task_id",
            project_id,
        )
        return [_lease(row) for row in rows]
