"""Durable storage: the update log, snapshots, compaction, ledgers and object storage."""
