-- Projects, the update log and compacted snapshots (DESIGN.md section 3).
CREATE TABLE projects (
    project_id TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    seq        BIGINT NOT NULL DEFAULT 0,  -- last committed seq of doc_updates
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE doc_updates (
    project_id TEXT NOT NULL REFERENCES projects (project_id),
    seq        BIGINT NOT NULL,
    "update"   BYTEA NOT NULL,
    actor      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, seq)
);

CREATE TABLE doc_snapshots (
    project_id   TEXT NOT NULL REFERENCES projects (project_id),
    upto_seq     BIGINT NOT NULL,
    state        BYTEA NOT NULL,
    state_vector BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, upto_seq)
);
