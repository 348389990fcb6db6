"""Applying the versioned migrations of `schemas/migrations/<dialect>/`."""

from __future__ import annotations

from persistence.clock import utc_now
from persistence.database import Database
from persistence.errors import SchemaBehind
from schemas.migration_files import Migration, migrations_for

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
            for statement in _statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                utc_now(),
            )
        applied.append(migration)
    return applied


def _statements(script: str) -> list[str]:
    """Split a migration into statements (ours keep `;` out of literals and bodies)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
