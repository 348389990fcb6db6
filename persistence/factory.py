"""Pick the backend the configuration names: Postgres if a URL is set, else SQLite."""

from __future__ import annotations

from pathlib import Path

from blackboard.persistence.database import Database
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.postgres_database import PostgresDatabase
from blackboard.persistence.sqlite_database import SQLiteDatabase


def make_database(database_url: str | None, data_dir: Path, pool_size: int = 10) -> Database:
    if database_url:
        return PostgresDatabase(database_url, pool_size=pool_size)
    return SQLiteDatabase(data_dir / "blackboard.db")


def make_store(database_url: str | None, data_dir: Path, pool_size: int = 10) -> DocumentStore:
    return DocumentStore(make_database(database_url, data_dir, pool_size))
