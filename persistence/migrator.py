"""Applying the versioned migrations of `schemas/migrations/<dialect>/`."""

from __future__ import annotations

import sqlite3

from blackboard.persistence.clock import utc_now
from blackboard.persistence.database import Database
from blackboard.persistence.errors import SchemaBehind
from blackboard.schemas.migration_files import Migration, migrations_for

# Any constant works; it only keeps two Postgres instances from migrating at once.
_PG_MIGRATION_LOCK = 7_464_382


async def pending_migrations(db: Database) -> list[Migration]:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
        if db.dialect == "sqlite"
        else "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    done = {row[0] for row in await db.fetch("SELECT version FROM schema_migrations")}
    return [m for m in migrations_for(db.dialect) if m.version not in done]


async def migrate(db: Database, *, apply: bool) -> list[Migration]:
    """Apply what is missing (each migration in its own transaction); return it.

    With `apply=False`, raise SchemaBehind if anything is missing.
    """
    missing = await pending_migrations(db)
    if missing and not apply:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise SchemaBehind(f"the database lacks migrations {names}: run `blackboard migrate` first")
    applied = []
    for migration in missing:
        async with db.transaction() as conn:
            if db.dialect == "postgres":
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
            if await conn.fetchval(
                "SELECT count(*) FROM schema_migrations WHERE version = $1", migration.version
            ):
                continue  # another instance applied it meanwhile
            for statement in _statements(migration.sql, db.dialect):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                utc_now(),
            )
        applied.append(migration)
    return applied


def _statements(script: str, dialect: str) -> list[str]:
    """The statements of a migration script.

    asyncpg runs a whole script as one simple query; sqlite3 runs one statement per
    call, so split where SQLite itself says a statement is complete (trigger bodies
    with `;` inside stay whole).
    """
    if dialect == "postgres":
        return [script]
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        not line.strip() or line.strip().startswith("--") for line in buffer.splitlines()
    ):
        raise ValueError(f"migration ends with an incomplete statement: {buffer.strip()[:80]}")
    return statements
