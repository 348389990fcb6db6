"""Durable storage: the SQL stores, the update log and snapshots, compaction, history.
Written once for both backends (SQLite embedded, Postgres); `objects/` holds the bytes."""
