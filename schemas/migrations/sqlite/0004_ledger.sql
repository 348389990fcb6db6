-- Budget ledger, idempotency keys and task leases (DESIGN.md section 4).
-- Amounts are integer units of 1/10,000 (schemas/money.py), never floats.
-- TIMESTAMP columns hold ISO 8601 UTC text of fixed width (they sort by time).
CREATE TABLE budget_accounts (
    project_id TEXT PRIMARY KEY REFERENCES projects (project_id),
    currency   TEXT NOT NULL,
    total      INTEGER NOT NULL,
    reserved   INTEGER NOT NULL DEFAULT 0,
    spent      INTEGER NOT NULL DEFAULT 0,
    version    INTEGER NOT NULL DEFAULT 0,  -- ops applied, = op_id of the newest ledger row
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT budget_within_total
        CHECK (reserved >= 0 AND spent >= 0 AND reserved + spent <= total)
);

CREATE TABLE budget_reservations (
    project_id     TEXT NOT NULL REFERENCES budget_accounts (project_id),
    reservation_id TEXT NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount > 0),
    state          TEXT NOT NULL CHECK (state IN ('open', 'committed', 'released', 'expired')),
    expires_at     TIMESTAMP NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, reservation_id)
);

-- What the expiry sweep scans.
CREATE INDEX budget_reservations_open ON budget_reservations (expires_at) WHERE state = 'open';

-- Append-only: one row per op that changed the account, with the balances after it.
CREATE TABLE budget_ledger (
    project_id      TEXT NOT NULL REFERENCES budget_accounts (project_id),
    op_id           INTEGER NOT NULL,
    op              TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    released        INTEGER NOT NULL DEFAULT 0 CHECK (released >= 0),
    reservation_id  TEXT,
    expires_at      TIMESTAMP,
    ref             TEXT,
    idempotency_key TEXT,
    actor           TEXT NOT NULL,
    total           INTEGER NOT NULL,
    reserved        INTEGER NOT NULL,
    spent           INTEGER NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, op_id),
    CHECK (reserved >= 0 AND spent >= 0 AND reserved + spent <= total)
);

-- The first response to each key, replayed to every retry (scope: "budget" or
-- "lease:<task_id>").
CREATE TABLE idempotency_keys (
    project_id      TEXT NOT NULL REFERENCES projects (project_id),
    scope           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          INTEGER NOT NULL,
    response        TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, scope, idempotency_key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- One row per task ever leased; fencing_token is the last token granted (never reused).
CREATE TABLE task_leases (
    project_id    TEXT NOT NULL REFERENCES projects (project_id),
    task_id       TEXT NOT NULL,
    holder        TEXT,
    fencing_token INTEGER NOT NULL DEFAULT 0,
    expires_at    TIMESTAMP,
    version       INTEGER NOT NULL DEFAULT 0,  -- bumped on every change (mirror ordering)
    PRIMARY KEY (project_id, task_id),
    CHECK ((holder IS NULL) = (expires_at IS NULL))
);

CREATE INDEX task_leases_held ON task_leases (expires_at) WHERE holder IS NOT NULL;
