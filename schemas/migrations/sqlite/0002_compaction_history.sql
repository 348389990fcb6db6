-- Compaction lease (one compactor per project across every process, fenced by epoch)
-- and the time index that history lookups and retention pruning use.
CREATE TABLE compaction_leases (
    project_id TEXT PRIMARY KEY REFERENCES projects (project_id),
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,      -- bumped on every grant; a snapshot write checks it
    expires_at TIMESTAMP NOT NULL
) WITHOUT ROWID;

CREATE INDEX doc_updates_by_time ON doc_updates (project_id, created_at);
