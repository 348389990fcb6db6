-- The time index that history lookups and retention pruning use.
CREATE INDEX doc_updates_by_time ON doc_updates (project_id, created_at);

-- The append statement bumps the project's seq counter (row-locked) in the same
-- statement and refuses rows of a project it did not find, so the foreign key only
-- repeated that check, one trigger call per row: it doubled the cost of a batch.
ALTER TABLE doc_updates DROP CONSTRAINT doc_updates_project_id_fkey;
