-- What the server learned of each status/attempt write in the row (its value, the
-- attempt it counted for), which the document itself does not keep: needed to rebuild
-- the status lattices after a reload (sync/status_epochs.py). Opaque here; written with
-- its row; empty = nothing recorded.
ALTER TABLE doc_updates ADD COLUMN status_epochs BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE doc_snapshots ADD COLUMN status_epochs BYTEA NOT NULL DEFAULT ''::bytea;
