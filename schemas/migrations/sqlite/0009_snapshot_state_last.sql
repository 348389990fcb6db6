-- Snapshots move to a rowid table with the state last, for SQLite's incremental blob
-- I/O (`persistence/snapshot_rows.py`): sqlite3 copies a selected or bound 20 MB blob
-- holding the GIL, which held the serving loop back for 20-60 ms on every compaction
-- and cold load of such a document (bench/RESULTS.md), and a blob handle reads and writes
-- it with the GIL let go. Last in the row, the state no longer lies before the columns
-- that prune reads (SQLite would walk its overflow pages to reach them).
CREATE TABLE doc_snapshots_by_rowid (
    project_id    TEXT NOT NULL REFERENCES projects (project_id),
    upto_seq      INTEGER NOT NULL,
    state_vector  BLOB NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    status_epochs BLOB NOT NULL DEFAULT x'',
    state         BLOB NOT NULL,
    PRIMARY KEY (project_id, upto_seq)
);
INSERT INTO doc_snapshots_by_rowid
    (project_id, upto_seq, state_vector, created_at, status_epochs, state)
SELECT project_id, upto_seq, state_vector, created_at, status_epochs, state
FROM doc_snapshots;
DROP TABLE doc_snapshots;
ALTER TABLE doc_snapshots_by_rowid RENAME TO doc_snapshots;
