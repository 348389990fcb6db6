"""Writing one decided batch of budget ops: the accounts' new balances, the reservations
opened or closed, the ledger rows and the idempotency keys, inside the batch's
transaction (`blackboard.sync.authority.ledger` decides; this only stores, with plain row tuples).

Postgres takes the whole batch in one statement (one round trip while the project's row
lock is held, and one executor run per table instead of one per row); SQLite, in
process and with one writer, takes one executemany per table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from blackboard.persistence.database import Connection
from blackboard.sync.authority.idempotency import KEY_COLUMNS, NewKey, store_keys

Rows = Sequence[tuple[Any, ...]]

ACCOUNTS = (
    "UPDATE budget_accounts SET total = $2, reserved = $3, spent = $4, version = $5,"
    " updated_at = $6 WHERE project_id = $1"
)
RESERVATIONS = (
    "INSERT INTO budget_reservations"
    " (project_id, reservation_id, amount, state, expires_at, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (project_id, reservation_id) DO UPDATE SET state = excluded.state"
)
LEDGER_COLUMNS = (
    "project_id, op_id, op, amount, released, reservation_id, expires_at, ref,"
    " idempotency_key, actor, total, reserved, spent, created_at"
)
LEDGER = (
    f"INSERT INTO budget_ledger ({LEDGER_COLUMNS})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, 15))})"
)

_POSTGRES = f"""
WITH accounts AS (
    UPDATE budget_accounts AS a
    SET total = v.total, reserved = v.reserved, spent = v.spent, version = v.version,
        updated_at = v.updated_at
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                $6::timestamptz[]) AS v(project_id, total, reserved, spent, version, updated_at)
    WHERE a.project_id = v.project_id
), reservations AS (
    INSERT INTO budget_reservations
        (project_id, reservation_id, amount, state, expires_at, created_at)
    SELECT * FROM unnest($7::text[], $8::text[], $9::bigint[], $10::text[],
                         $11::timestamptz[], $12::timestamptz[])
    ON CONFLICT (project_id, reservation_id) DO UPDATE SET state = excluded.state
), ledger AS (
    INSERT INTO budget_ledger ({LEDGER_COLUMNS})
    SELECT * FROM unnest($13::text[], $14::bigint[], $15::text[], $16::bigint[],
                         $17::bigint[], $18::text[], $19::timestamptz[], $20::text[],
                         $21::text[], $22::text[], $23::bigint[], $24::bigint[],
                         $25::bigint[], $26::timestamptz[])
), keys AS (
    INSERT INTO idempotency_keys ({KEY_COLUMNS})
    SELECT * FROM unnest($27::text[], $28::text[], $29::text[], $30::text[],
                         $31::integer[], $32::text[], $33::timestamptz[])
)
SELECT 1
"""


def _columns(rows: Rows, width: int) -> list[list[Any]]:
    """Rows as one list per column (the arrays Postgres unnests back into rows)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


async def write_rows(
    conn: Connection,
    dialect: str,
    *,
    accounts: Rows,
    reservations: Rows,
    ledger: Rows,
    keys: Sequence[NewKey],
    now: datetime,
) -> None:
    if dialect == "postgres":
        await conn.execute(
            _POSTGRES,
            *_columns(accounts, 6),
            *_columns(reservations, 6),
            *_columns(ledger, 14),
            *_columns([key.row(now) for key in keys], 7),
        )
        return
    for sql, rows in ((ACCOUNTS, accounts), (RESERVATIONS, reservations), (LEDGER, ledger)):
        if rows:
            await conn.executemany(sql, rows)
    await store_keys(conn, keys, now)
