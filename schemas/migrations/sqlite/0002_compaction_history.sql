-- The time index that history lookups and retention pruning use.
CREATE INDEX doc_updates_by_time ON doc_updates (project_id, created_at);
