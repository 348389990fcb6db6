-- The attempt (epoch) each task-status write counted for, which the document itself
-- does not keep: needed to rebuild the status lattices after a reload. An opaque
-- record written by the sync layer with its row; empty = nothing recorded.
ALTER TABLE doc_updates ADD COLUMN status_epochs BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE doc_snapshots ADD COLUMN status_epochs BYTEA NOT NULL DEFAULT ''::bytea;
