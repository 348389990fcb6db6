"""Real Postgres and Redis for the tests: each test gets its own database or key prefix.

`BLACKBOARD_TEST_DATABASE_URL` and `BLACKBOARD_TEST_REDIS_URL` say where they are. A
missing backend fails the test loudly; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from blackboard.persistence.migrator import migrate
from blackboard.persistence.postgres_database import PostgresDatabase

PG_URL = os.environ.get("BLACKBOARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BLACKBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(*, migrated: bool = True) -> str:
    """A new database; returns its URL. With `migrated` (the default) it has the schema,
    as `blackboard migrate` leaves it: a server on Postgres refuses a database behind."""
    name = f"bb_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(PG_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"Postgres is not reachable at {PG_URL} ({exc}); start it (make services) or set "
            "BLACKBOARD_TEST_DATABASE_URL"
        ) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _with_database(PG_URL, name)
    if migrated:
        await migrate_database(url)
    return url


async def migrate_database(url: str) -> None:
    db = PostgresDatabase(url, pool_size=1)
    await db.open()
    try:
        await migrate(db, apply=True)
    finally:
        await db.close()


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(PG_URL, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def redis_prefix() -> str:
    return f"bbtest:{os.getpid()}:{uuid.uuid4().hex[:8]}:"
