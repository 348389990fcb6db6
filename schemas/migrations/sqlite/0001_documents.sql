-- Projects, the update log and compacted snapshots (DESIGN.md section 3).
-- TIMESTAMP columns hold ISO 8601 UTC text of fixed width (they sort by time).
CREATE TABLE projects (
    project_id TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    seq        INTEGER NOT NULL DEFAULT 0,  -- last committed seq of doc_updates
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE doc_updates (
    project_id TEXT NOT NULL REFERENCES projects (project_id),
    seq        INTEGER NOT NULL,
    "update"   BLOB NOT NULL,
    actor      TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, seq)
) WITHOUT ROWID;

CREATE TABLE doc_snapshots (
    project_id   TEXT NOT NULL REFERENCES projects (project_id),
    upto_seq     INTEGER NOT NULL,
    state        BLOB NOT NULL,
    state_vector BLOB NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, upto_seq)
) WITHOUT ROWID;
