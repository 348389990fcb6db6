-- The log moves to a rowid table, its rows in commit order, with the (project_id, seq)
-- key as its index. Keyed by project, a group commit over many projects wrote one
-- more page (often three: a full page splits) per project to the WAL, each whole; in
-- commit order the rows fill the last pages, and only the small index entries land
-- per project. 10k rows/s over 200 projects: about a third less of the database
-- thread's CPU (bench/RESULTS.md). Reading one project's rows, spread among other
-- projects', costs more (about 3 µs a row instead of 1): a row is written once and
-- read a few times. The update goes last, so that the columns after it are read
-- without walking a big update's overflow pages.
CREATE TABLE doc_updates_in_order (
    project_id    TEXT NOT NULL REFERENCES projects (project_id),
    seq           INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    status_epochs BLOB NOT NULL DEFAULT x'',
    "update"      BLOB NOT NULL,
    PRIMARY KEY (project_id, seq)
);
INSERT INTO doc_updates_in_order (project_id, seq, actor, created_at, status_epochs, "update")
SELECT project_id, seq, actor, created_at, status_epochs, "update"
FROM doc_updates;
DROP TABLE doc_updates;
ALTER TABLE doc_updates_in_order RENAME TO doc_updates;
