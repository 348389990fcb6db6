"""The budget ledger (DESIGN.md section 4), written once for both SQL backends.

Balances live in `budget_accounts` (CHECK `reserved + spent <= total`); every op that
changes them appends a `budget_ledger` row with the balances after it, and its response
is stored under its idempotency key in the same transaction.

Ops are group-committed (`blackboard.persistence.group_commit`), like the update log: the ops
that arrive while one batch commits form the next batch, run as ONE transaction that
holds the row lock of every project it touches (`SELECT … FOR UPDATE`, projects in
id order so instances never deadlock; SQLite: BEGIN IMMEDIATE). Under the lock the ops
are decided one after another against the balances the previous one left, exactly as if
each ran alone, so a hot project pays one lock and one commit per batch instead of per
op. If a batch fails, its ops are retried one by one, so one failing op cannot fail the
others (an op whose first attempt did commit is then answered from its stored key).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from blackboard.persistence.clock import to_iso
from blackboard.persistence.database import Connection, Database, Row, RowWriter
from blackboard.persistence.db_clock import database_now
from blackboard.persistence.errors import StoreError, error_body
from blackboard.persistence.group_commit import GroupCommitter
from blackboard.persistence.in_list import padded_in
from blackboard.schemas.document import SERVER_ACTOR
from blackboard.schemas.money import MAX_UNITS, to_number
from blackboard.sync.authority.idempotency import (
    KEY_RETENTION_S,
    NewKey,
    Reply,
    StoredKey,
    find_keys,
    prune_keys,
    request_hash,
)
from blackboard.sync.authority.ledger_write import LEDGER, write_rows

log = logging.getLogger(__name__)

CLIENT_OPS = ("reserve", "commit", "release", "charge", "topup")
EXPIRE = "expire"  # the server releasing a reservation past its expiry
DEFAULT_TTL_S = 900.0
MAX_TTL_S = 30 * 24 * 3600.0
SCOPE = "budget"  # idempotency keys of budget ops (per project)


class LedgerUnavailable(StoreError):
    """The op was not decided (database failure, overload, shutdown): retry it."""


@dataclass(frozen=True)
class Balances:
    currency: str
    total: int  # integer units (blackboard.schemas.money)
    reserved: int
    spent: int
    version: int  # ops applied so far
    updated_at: datetime

    @property
    def available(self) -> int:
        return self.total - self.reserved - self.spent

    def to_json(self) -> dict[str, Any]:
        return {
            "total": to_number(self.total),
            "reserved": to_number(self.reserved),
            "spent": to_number(self.spent),
            "available": to_number(self.available),
            "currency": self.currency,
        }


@dataclass(frozen=True)
class BudgetOp:
    """A validated request; `idempotency_key` is None only for the server's own ops."""

    op: str
    amount: int | None = None
    idempotency_key: str | None = None
    reservation_id: str | None = None
    ref: str | None = None
    ttl_s: float | None = None

    def request_hash(self) -> str:
        return request_hash((self.op, self.amount, self.reservation_id, self.ref, self.ttl_s))


@dataclass(frozen=True)
class LedgerEntry:
    op_id: int
    op: str
    amount: int
    released: int  # commit: the part of the reservation not spent
    reservation_id: str | None
    expires_at: datetime | None
    ref: str | None
    idempotency_key: str | None
    actor: str
    balances: Balances  # after this op
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "op_id": self.op_id,
            "op": self.op,
            "amount": to_number(self.amount),
        }
        if self.op == "commit":
            body["released"] = to_number(self.released)
        if self.reservation_id is not None:
            body["reservation_id"] = self.reservation_id
        if self.expires_at is not None:
            body["expires_at"] = to_iso(self.expires_at)
        if self.ref is not None:
            body["ref"] = self.ref
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        body["actor"] = self.actor
        body["created_at"] = to_iso(self.created_at)
        body["balances"] = self.balances.to_json()
        return body


@dataclass
class _Reservation:
    reservation_id: str
    amount: int
    state: str  # open | committed | released | expired
    expires_at: datetime
    created_at: datetime
    new: bool = False
    closed: bool = False  # changed by this batch


@dataclass
class _Account:
    """One project's balances while a batch holds its lock."""

    project_id: str
    balances: Balances
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)

    def record(
        self,
        op: BudgetOp,
        actor: str,
        now: datetime,
        *,
        amount: int,
        released: int = 0,
        reservation: _Reservation | None = None,
        **change: int,
    ) -> Reply[Balances]:
        after = replace(self.balances, version=self.balances.version + 1, updated_at=now, **change)
        self.balances = after
        entry = LedgerEntry(
            op_id=after.version,
            op=op.op,
            amount=amount,
            released=released,
            reservation_id=reservation.reservation_id if reservation else None,
            expires_at=reservation.expires_at if op.op == "reserve" and reservation else None,
            ref=op.ref,
            idempotency_key=op.idempotency_key,
            actor=actor,
            balances=after,
            created_at=now,
        )
        self.entries.append(entry)
        return Reply(200, entry.to_json(), effect=after)

    def refuse(self, status: int, code: str, detail: str) -> Reply[Balances]:
        return Reply(status, error_body(code, detail, balances=self.balances.to_json()))


def _decide(account: _Account, op: BudgetOp, actor: str, now: datetime) -> Reply[Balances]:
    """Apply one op to the locked account; pure bookkeeping, written by the caller."""
    b = account.balances
    amount = op.amount or 0
    if op.op in ("reserve", "charge") and amount > b.available:
        return account.refuse(
            409,
            "insufficient_budget",
            f"{op.op} of {to_number(amount)} exceeds the {to_number(b.available)}"
            f" {b.currency} available",
        )
    if op.op == "reserve":
        ttl = timedelta(seconds=op.ttl_s if op.ttl_s is not None else DEFAULT_TTL_S)
        reservation = _Reservation(f"rsv-{uuid.uuid4().hex}", amount, "open", now + ttl, now)
        reservation.new = True
        account.reservations[reservation.reservation_id] = reservation
        return account.record(
            op, actor, now, amount=amount, reservation=reservation, reserved=b.reserved + amount
        )
    if op.op == "charge":
        return account.record(op, actor, now, amount=amount, spent=b.spent + amount)
    if op.op == "topup":
        if b.total + amount > MAX_UNITS:
            return account.refuse(
                409, "limit_exceeded", f"the total may not exceed {to_number(MAX_UNITS)}"
            )
        return account.record(op, actor, now, amount=amount, total=b.total + amount)
    return _close_reservation(account, op, actor, now)


def _close_reservation(
    account: _Account, op: BudgetOp, actor: str, now: datetime
) -> Reply[Balances]:
    """commit, release or expire one reservation (each closes it for good)."""
    rid = op.reservation_id or ""
    reservation = account.reservations.get(rid)
    if reservation is None:
        return Reply(404, error_body("not_found", f"reservation {rid!r} does not exist"))
    if reservation.state != "open":
        return account.refuse(
            409, "reservation_closed", f"reservation {rid!r} is already {reservation.state}"
        )
    expired = reservation.expires_at <= now
    if op.op == EXPIRE and not expired:
        return account.refuse(409, "not_expired", f"reservation {rid!r} has not expired")
    if op.op == "commit" and expired:
        return account.refuse(409, "reservation_expired", f"reservation {rid!r} has expired")
    held = reservation.amount
    spent = held if op.op == "commit" and op.amount is None else (op.amount or 0)
    if op.op == "commit" and spent > held:
        return account.refuse(
            409,
            "exceeds_reservation",
            f"commit of {to_number(spent)} exceeds the {to_number(held)} reserved",
        )
    reservation.state = {"commit": "committed", "release": "released"}.get(op.op, "expired")
    reservation.closed = True
    b = account.balances
    if op.op == "commit":
        return account.record(
            op,
            actor,
            now,
            amount=spent,
            released=held - spent,
            reservation=reservation,
            reserved=b.reserved - held,
            spent=b.spent + spent,
        )
    return account.record(
        op, actor, now, amount=held, reservation=reservation, reserved=b.reserved - held
    )


def account_opener(total: int, currency: str) -> RowWriter:
    """Writes a new project's budget account inside the transaction creating the project."""

    async def open_account(conn: Connection, project_id: str, now: datetime) -> None:
        await conn.execute(
            "INSERT INTO budget_accounts (project_id, currency, total, updated_at)"
            " VALUES ($1, $2, $3, $4)",
            project_id,
            currency,
            total,
            now,
        )

    return open_account


IMPORT = "import"  # an account brought in by `blackboard import`


def account_importer(
    total: int, spent: int, currency: str, version: int, ref: str, actor: str
) -> RowWriter:
    """Writes an imported project's account and its one `import` ledger row (open
    reservations are not carried) inside the transaction creating the project.

    The row is op `version`, so the budget root the archive carries (which shows that
    version) stays as it is, and the next op shows a newer one."""

    async def import_account(conn: Connection, project_id: str, now: datetime) -> None:
        await conn.execute(
            "INSERT INTO budget_accounts (project_id, currency, total, spent, version,"
            " updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            project_id,
            currency,
            total,
            spent,
            version,
            now,
        )
        row = (project_id, version, IMPORT, total, 0, None, None, ref, None, actor)
        await conn.execute(LEDGER, *row, total, 0, spent, now)

    return import_account


_ACCOUNT_COLUMNS = "currency, total, reserved, spent, version, updated_at"


def _balances(row: Row) -> Balances:
    return Balances(row[0], row[1], row[2], row[3], row[4], row[5])


@dataclass
class _Queued:
    project_id: str
    op: BudgetOp
    actor: str
    done: asyncio.Future[Reply[Balances]] = field(repr=False)


def _fail(queued: _Queued, exc: Exception) -> None:
    if not queued.done.done():
        queued.done.set_exception(LedgerUnavailable(f"the budget op failed: {exc}"))


class BudgetLedger:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        max_queued: int = 10_000,
        linger_s: float = 0.002,
        key_retention_s: float = KEY_RETENTION_S,
    ) -> None:
        self.db = db
        self.key_retention_s = key_retention_s
        self.max_queued = max_queued
        self._committer: GroupCommitter[_Queued] = GroupCommitter(
            "budget ledger", self._settle, max_batch=max_batch, linger_s=linger_s
        )
        # callables(op, reply status, seconds from submit to reply), e.g. metrics
        self.on_op: list[Callable[[str, int, float], None]] = []

    def start(self) -> None:
        self._committer.start()

    async def stop(self, grace_s: float) -> None:
        """Decide every op queued so far (waiting at most `grace_s`), then stop."""
        for queued in await self._committer.stop(grace_s):
            if not queued.done.done():
                queued.done.set_exception(LedgerUnavailable("the server is shutting down"))

    async def submit(self, project_id: str, op: BudgetOp, actor: str) -> Reply[Balances]:
        """Decide and commit one op; its reply once committed (or replayed from its key)."""
        if self._committer.stopping:
            raise LedgerUnavailable("the server is shutting down")
        if self._committer.waiting >= self.max_queued:
            raise LedgerUnavailable("too many budget ops are waiting for the database")
        done: asyncio.Future[Reply[Balances]] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self._committer.put(_Queued(project_id, op, actor, done))
        reply = await done
        for hook in self.on_op:
            hook(op.op, reply.status, time.perf_counter() - started)
        return reply

    async def _settle(self, batch: list[_Queued]) -> None:
        """Answer every op of the batch: never retried as a whole, as a failed batch is
        tried again one op at a time and an op that fails alone fails."""
        try:
            replies = await self._commit(batch)
        except Exception as exc:
            log.warning("budget ledger: batch of %d ops failed: %s", len(batch), exc)
            if len(batch) == 1:
                _fail(batch[0], exc)
            else:
                await self._one_by_one(batch)
            return
        for queued, reply in zip(batch, replies, strict=True):
            if not queued.done.done():
                queued.done.set_result(reply)

    async def _one_by_one(self, batch: list[_Queued]) -> None:
        for queued in batch:
            try:
                (reply,) = await self._commit([queued])
            except Exception as exc:
                _fail(queued, exc)
                continue
            if not queued.done.done():
                queued.done.set_result(reply)

    async def _commit(self, batch: list[_Queued]) -> list[Reply[Balances]]:
        """Decide and write a batch in one transaction; the replies in batch order."""
        by_project: dict[str, list[_Queued]] = {}
        for queued in batch:
            by_project.setdefault(queued.project_id, []).append(queued)
        replies: dict[int, Reply[Balances]] = {}  # by id() of the queued op
        async with self.db.transaction() as conn:
            locked = {
                project_id: await conn.fetchrow(
                    f"SELECT {_ACCOUNT_COLUMNS} FROM budget_accounts WHERE project_id = $1"
                    + self.db.for_update,
                    project_id,
                )
                for project_id in sorted(by_project)  # one lock order: no deadlocks
            }
            now = await self._now_for_batch(conn)
            accounts: list[_Account] = []
            new_keys: list[NewKey] = []
            for project_id, row in locked.items():
                items = by_project[project_id]
                if row is None:
                    detail = f"project {project_id!r} has no budget"
                    for queued in items:
                        replies[id(queued)] = Reply(404, error_body("not_found", detail))
                    continue
                account = _Account(project_id, _balances(row))
                wanted = [q.op.idempotency_key for q in items if q.op.idempotency_key]
                keys = await find_keys(conn, project_id, SCOPE, wanted)
                await _load_reservations(conn, account, {q.op.reservation_id for q in items})
                for queued in items:
                    replies[id(queued)] = _answer(account, queued, keys, new_keys, now)
                accounts.append(account)
            await _write(conn, self.db.dialect, accounts, new_keys, now)
        return [replies[id(queued)] for queued in batch]

    async def _now_for_batch(self, conn: Connection) -> datetime:
        """The database's clock once the locks are held (one round trip on Postgres)."""
        if self.db.dialect != "postgres":
            return await database_now(conn, self.db.dialect)
        # Also plan the batch's lookups by their actual id lists: a cached generic plan
        # of a varying-length id list scans the whole project while the statistics still
        # describe the table as small (a fresh database, before autovacuum analyzes it).
        return await conn.fetchval(
            "SELECT clock_timestamp() FROM set_config('plan_cache_mode', 'force_custom_plan', true)"
        )

    # --- reads -----------------------------------------------------------------

    async def balances(self, project_id: str) -> Balances | None:
        row = await self.db.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM budget_accounts WHERE project_id = $1", project_id
        )
        return _balances(row) if row else None

    async def entries(self, project_id: str, after_op_id: int, limit: int) -> list[LedgerEntry]:
        rows = await self.db.fetch(
            "SELECT l.op_id, l.op, l.amount, l.released, l.reservation_id, l.expires_at, l.ref,"
            " l.idempotency_key, l.actor, l.total, l.reserved, l.spent, l.created_at, a.currency"
            " FROM budget_ledger l JOIN budget_accounts a ON a.project_id = l.project_id"
            " WHERE l.project_id = $1 AND l.op_id > $2 ORDER BY l.op_id LIMIT $3",
            project_id,
            after_op_id,
            limit,
        )
        return [
            LedgerEntry(*r[0:9], Balances(r[13], r[9], r[10], r[11], r[0], r[12]), created_at=r[12])
            for r in rows
        ]

    async def expire_due(self, limit: int = 500) -> list[tuple[str, Reply[Balances]]]:
        """Release reservations past their expiry (database clock), as the server;
        each project with the reply of its expire op."""
        async with self.db.read_transaction() as conn:
            now = await database_now(conn, self.db.dialect)
            due = await conn.fetch(
                "SELECT project_id, reservation_id FROM budget_reservations"
                " WHERE state = 'open' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
                now,
                limit,
            )
        # Through the queue like any op: decided again under the lock, so an expiry
        # racing a commit (or another instance's sweep) takes effect at most once.
        replies = await asyncio.gather(
            *(
                self.submit(project_id, BudgetOp(EXPIRE, reservation_id=rid), SERVER_ACTOR)
                for project_id, rid in due
            ),
            return_exceptions=True,  # one failure must not hide the others' replies
        )
        return [
            (row[0], reply)
            for row, reply in zip(due, replies, strict=True)
            if isinstance(reply, Reply)
        ]

    async def prune_keys(self) -> int:
        async with self.db.read_transaction() as conn:
            now = await database_now(conn, self.db.dialect)
        return await prune_keys(self.db, now - timedelta(seconds=self.key_retention_s))


def _answer(
    account: _Account,
    queued: _Queued,
    keys: dict[str, StoredKey],
    new_keys: list[NewKey],
    now: datetime,
) -> Reply[Balances]:
    """Replay the op's key if it was seen (in the database or earlier in this batch),
    else decide the op and remember its reply under its key."""
    key, fingerprint = queued.op.idempotency_key, queued.op.request_hash()
    if key is not None and key in keys:
        return keys[key].answer(fingerprint, key)
    reply = _decide(account, queued.op, queued.actor, now)
    if key is not None:
        keys[key] = StoredKey(fingerprint, reply.status, reply.body)
        new_keys.append(NewKey(account.project_id, SCOPE, key, keys[key]))
    return reply


async def _load_reservations(conn: Connection, account: _Account, wanted: set[str | None]) -> None:
    ids = sorted(rid for rid in wanted if rid)
    if not ids:
        return
    marks, values = padded_in(ids, 2)
    rows = await conn.fetch(
        "SELECT reservation_id, amount, state, expires_at, created_at FROM budget_reservations"
        f" WHERE project_id = $1 AND reservation_id IN {marks}",
        account.project_id,
        *values,
    )
    for row in rows:
        account.reservations[row[0]] = _Reservation(row[0], row[1], row[2], row[3], row[4])


async def _write(
    conn: Connection, dialect: str, accounts: list[_Account], keys: list[NewKey], now: datetime
) -> None:
    changed = [a for a in accounts if a.entries]
    # A reservation opened and closed in the same batch is written once, closed.
    touched = [
        (a.project_id, r) for a in changed for r in a.reservations.values() if r.new or r.closed
    ]
    await write_rows(
        conn,
        dialect,
        accounts=[
            (a.project_id, b.total, b.reserved, b.spent, b.version, b.updated_at)
            for a in changed
            for b in (a.balances,)
        ],
        reservations=[
            (p, r.reservation_id, r.amount, r.state, r.expires_at, r.created_at) for p, r in touched
        ],
        ledger=[
            (
                a.project_id,
                e.op_id,
                e.op,
                e.amount,
                e.released,
                e.reservation_id,
                e.expires_at,
                e.ref,
                e.idempotency_key,
                e.actor,
                e.balances.total,
                e.balances.reserved,
                e.balances.spent,
                e.created_at,
            )
            for a in changed
            for e in a.entries
        ],
        keys=keys,
        now=now,
    )
