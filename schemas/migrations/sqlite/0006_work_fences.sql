-- Exclusive background work across server instances (expiry sweeps, ...): one row per
-- kind of work; whoever holds it unexpired does the work, and every write it makes
-- checks the epoch, so a holder that paused past its expiry cannot write late.
CREATE TABLE work_fences (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,      -- bumped on every grant
    expires_at TIMESTAMP NOT NULL
) WITHOUT ROWID;
