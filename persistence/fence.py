"""Fences: exclusive background work across server instances, decided in the database.

A fence is a named lease row (`work_fences`) with an epoch bumped on every grant. The
instance holding it unexpired does the work (an expiry sweep, say); the others skip.
A lock alone is not enough: an instance can pause (GC, SIGSTOP, a VM migration) past
its lease, another takes over, and the first wakes up mid-work. So every write the work
makes calls `check(conn, token)` inside its own transaction: the fence row is locked
until that transaction ends and a superseded epoch raises FenceLost, so a late writer
changes nothing (Kleppmann's fencing token, enforced at the resource).

Expiry is judged by the database clock, never by an instance's own clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from blackboard.persistence.database import Connection, Database
from blackboard.persistence.db_clock import database_now
from blackboard.persistence.errors import StoreError


class FenceLost(StoreError):
    """The fence was granted to someone else since this token: do not write."""

    def __init__(self, token: FenceToken) -> None:
        super().__init__(f"fence {token.name!r} epoch {token.epoch} is no longer current")
        self.token = token


@dataclass(frozen=True)
class FenceToken:
    name: str
    holder: str
    epoch: int


class Fences:
    def __init__(self, db: Database, holder: str) -> None:
        self.db = db
        self.holder = holder  # who this instance is, shown in the row for operators

    async def acquire(self, name: str, ttl: timedelta) -> FenceToken | None:
        """Take fence `name` for `ttl` if it is free or expired; None while another holds it.

        Taking it again while holding it (or after it expired) is a new grant: a new
        epoch, so work begun under the old token can no longer write.
        """
        async with self.db.transaction() as conn:
            now = await database_now(conn, self.db.dialect)
            epoch = await conn.fetchval(
                "INSERT INTO work_fences (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " epoch = work_fences.epoch + 1, expires_at = excluded.expires_at"
                " WHERE work_fences.expires_at <= $4 OR work_fences.holder = $2"
                " RETURNING epoch",
                name,
                self.holder,
                now + ttl,
                now,
            )
        return FenceToken(name, self.holder, epoch) if epoch is not None else None

    async def renew(self, token: FenceToken, ttl: timedelta) -> bool:
        """Extend a grant (same epoch); False if the fence changed hands since."""
        async with self.db.transaction() as conn:
            now = await database_now(conn, self.db.dialect)
            return bool(
                await conn.execute(
                    "UPDATE work_fences SET expires_at = $3 WHERE name = $1 AND epoch = $2",
                    token.name,
                    token.epoch,
                    now + ttl,
                )
            )

    async def release(self, token: FenceToken) -> None:
        """Free the fence now (a no-op if it changed hands since)."""
        async with self.db.transaction() as conn:
            now = await database_now(conn, self.db.dialect)
            await conn.execute(
                "UPDATE work_fences SET expires_at = $3 WHERE name = $1 AND epoch = $2",
                token.name,
                token.epoch,
                now,
            )

    async def check(self, conn: Connection, token: FenceToken) -> None:
        """Inside a write transaction, before writing: FenceLost unless `token` is current.

        The fence row stays locked until that transaction ends, so the fence cannot
        change hands between this check and the commit.
        """
        epoch = await conn.fetchval(
            "SELECT epoch FROM work_fences WHERE name = $1" + self.db.for_update, token.name
        )
        if epoch != token.epoch:
            raise FenceLost(token)

    @asynccontextmanager
    async def held(self, name: str, ttl: timedelta) -> AsyncIterator[FenceToken | None]:
        """`async with fences.held(name, ttl) as token:` work only if `token` is not None;
        the fence is released at the end."""
        token = await self.acquire(name, ttl)
        try:
            yield token
        finally:
            if token is not None:
                await self.release(token)
