"""Pick the store the configuration names: Postgres if a URL is set, else embedded SQLite."""

from __future__ import annotations

from pathlib import Path

from persistence.sqlite_store import SQLiteStore
from persistence.store import Store


def make_store(database_url: str | None, data_dir: Path, pool_size: int = 10) -> Store:
    if database_url:
        from persistence.postgres_store import PostgresStore

        return PostgresStore(database_url, pool_size=pool_size)
    return SQLiteStore(data_dir / "blackboard.db")
