-- Repairs the server made to well-formed updates that broke the document rules
-- (DESIGN.md section 2). One row per repaired path; `seq` is the offending update's.
-- `before` and `after` hold JSON text (`after` is JSON null when the value was removed).
CREATE TABLE corrections (
    project_id TEXT NOT NULL REFERENCES projects (project_id),
    seq        BIGINT NOT NULL,
    n          INTEGER NOT NULL,   -- its place among the repairs of that update
    actor      TEXT NOT NULL,
    path       TEXT NOT NULL,      -- e.g. shots/S1/duration_s
    rule       TEXT NOT NULL,
    "before"   TEXT NOT NULL,
    "after"    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, seq, n)
);
