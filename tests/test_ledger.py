"""The budget ledger on both backends (the `store` fixture), driven without HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.errors import ProjectExists
from blackboard.persistence.factory import make_store
from blackboard.schemas.money import parse_amount
from blackboard.sync.authority.idempotency import KEY_RETENTION_S
from blackboard.sync.authority.ledger import BudgetLedger, BudgetOp, LedgerEntry, LedgerUnavailable
from blackboard.sync.projects.creation import create_project
from blackboard.web.api.budget import parse_op
from tests.support.backends import create_database, drop_database
from tests.support.budget_workload import check_outcome, run_workload


@pytest.fixture
async def ledger(store: DocumentStore) -> AsyncIterator[BudgetLedger]:
    ledger = BudgetLedger(store.db)
    ledger.start()
    try:
        yield ledger
    finally:
        await ledger.stop(5)


async def _project(store: DocumentStore, project_id: str, total: str = "100") -> None:
    await create_project(store, project_id, project_id, parse_amount(total), "EUR", {}, "test")


async def _op(ledger: BudgetLedger, project_id: str, **body: Any) -> tuple[int, dict[str, Any]]:
    reply = await ledger.submit(project_id, parse_op(body), "tester")
    return reply.status, reply.body


async def _all_entries(ledger: BudgetLedger, project_id: str) -> list[LedgerEntry]:
    return await ledger.entries(project_id, 0, 100_000)


async def test_account_is_created_with_the_project(store: DocumentStore) -> None:
    ledger = BudgetLedger(store.db)
    await _project(store, "film", "2500.75")
    balances = await ledger.balances("film")
    assert balances is not None
    assert balances.to_json() == {
        "total": 2500.75,
        "reserved": 0,
        "spent": 0,
        "available": 2500.75,
        "currency": "EUR",
    }
    # A second create changes nothing, the account included.
    with pytest.raises(ProjectExists):
        await _project(store, "film", "1")
    assert (await ledger.balances("film")) == balances


async def test_a_failing_account_insert_leaves_no_project(store: DocumentStore) -> None:
    async def broken(conn: Any, project_id: str, now: Any) -> None:
        await conn.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(Exception, match="no_such_table"):
        await store.create_project("half", "half", b"\x00\x00", "test", with_rows=broken)
    assert await store.get_project("half") is None


async def test_reserve_commit_release_charge_topup(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    await _project(store, "p", "100")
    status, reserved = await _op(ledger, "p", op="reserve", amount="30.5", idempotency_key="a")
    assert status == 200
    assert reserved["balances"] == {
        "total": 100,
        "reserved": 30.5,
        "spent": 0,
        "available": 69.5,
        "currency": "EUR",
    }
    assert reserved["expires_at"] > reserved["created_at"]
    assert reserved["actor"] == "tester" and reserved["op_id"] == 1
    rid = reserved["reservation_id"]

    status, committed = await _op(
        ledger, "p", op="commit", reservation_id=rid, amount=20, idempotency_key="b"
    )
    assert status == 200
    assert (committed["amount"], committed["released"]) == (20, 10.5)
    assert committed["balances"]["reserved"] == 0 and committed["balances"]["spent"] == 20

    status, body = await _op(ledger, "p", op="release", reservation_id=rid, idempotency_key="c")
    assert (status, body["error"]) == (409, "reservation_closed")

    _, second = await _op(ledger, "p", op="reserve", amount=5, idempotency_key="d")
    status, released = await _op(
        ledger, "p", op="release", reservation_id=second["reservation_id"], idempotency_key="e"
    )
    assert status == 200 and released["amount"] == 5
    assert released["balances"]["reserved"] == 0

    status, body = await _op(ledger, "p", op="charge", amount="80.0001", idempotency_key="f")
    assert (status, body["error"]) == (409, "insufficient_budget")
    assert body["balances"]["available"] == 80
    status, _ = await _op(ledger, "p", op="charge", amount=80, idempotency_key="g")
    assert status == 200
    status, topped = await _op(ledger, "p", op="topup", amount="0.0001", idempotency_key="h")
    assert status == 200
    assert topped["balances"] == {
        "total": 100.0001,
        "reserved": 0,
        "spent": 100,
        "available": 0.0001,
        "currency": "EUR",
    }

    status, body = await _op(
        ledger, "p", op="commit", reservation_id="rsv-nope", idempotency_key="i"
    )
    assert (status, body["error"]) == (404, "not_found")
    _, third = await _op(ledger, "p", op="reserve", amount="0.0001", idempotency_key="j")
    status, body = await _op(
        ledger,
        "p",
        op="commit",
        reservation_id=third["reservation_id"],
        amount=1,
        idempotency_key="k",
    )
    assert (status, body["error"]) == (409, "exceeds_reservation")

    entries = await _all_entries(ledger, "p")
    ops = ["reserve", "commit", "reserve", "release", "charge", "topup", "reserve"]
    assert [e.op for e in entries] == ops
    assert all(e.actor == "tester" for e in entries)


async def test_same_key_replays_refusals_too_and_a_changed_request_conflicts(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    await _project(store, "p", "10")
    refused = await _op(ledger, "p", op="charge", amount=11, idempotency_key="k")
    assert refused[0] == 409
    # The money appears; the same key still answers the refusal it got first.
    await _op(ledger, "p", op="topup", amount=5, idempotency_key="top")
    replay = await ledger.submit(
        "p", parse_op({"op": "charge", "amount": 11, "idempotency_key": "k"}), "x"
    )
    assert (replay.status, replay.body, replay.replayed) == (*refused, True)
    # Same key, different request: 409, nothing changes.
    before = await ledger.balances("p")
    status, body = await _op(ledger, "p", op="charge", amount=1, idempotency_key="k")
    assert (status, body["error"]) == (409, "idempotency_conflict")
    assert await ledger.balances("p") == before
    # Keys are per project.
    await _project(store, "q", "10")
    assert (await _op(ledger, "q", op="charge", amount=1, idempotency_key="k"))[0] == 200


async def test_concurrent_duplicates_take_effect_once(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    await _project(store, "p", "1000")
    body = {"op": "charge", "amount": 3, "idempotency_key": "same"}
    replies = await asyncio.gather(*(_op(ledger, "p", **body) for _ in range(50)))
    assert all(reply == replies[0] for reply in replies)
    assert replies[0][0] == 200
    assert len(await _all_entries(ledger, "p")) == 1
    assert (await ledger.balances("p")).spent == parse_amount(3)  # type: ignore[union-attr]


async def test_64_workers_with_duplicates_keep_every_invariant(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    await _project(store, "hot", "400")

    async def send(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await _op(ledger, "hot", **body)

    outcome = await run_workload(send, workers=64, rounds=6)
    assert len(outcome.replies) >= 384 and outcome.duplicated > 50
    entries = [e.to_json() for e in await _all_entries(ledger, "hot")]
    balances = await ledger.balances("hot")
    assert balances is not None
    check_outcome(outcome, entries, {**balances.to_json()}, total=400)
    refused = [k for k, r in outcome.replies.items() if r[0][1].get("error")]
    assert refused, "the workload should run the budget dry"


async def test_expired_reservations_are_released_by_the_server(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    await _project(store, "p", "50")
    _, short = await _op(ledger, "p", op="reserve", amount=10, ttl_s=0.2, idempotency_key="s")
    _, long = await _op(ledger, "p", op="reserve", amount=5, idempotency_key="l")
    assert await ledger.expire_due() == []  # nothing is due yet
    await asyncio.sleep(0.4)  # past the ttl: expiry is judged by the clock, not an event
    # A commit past expiry is refused even before the sweep runs (database clock).
    status, body = await _op(
        ledger, "p", op="commit", reservation_id=short["reservation_id"], idempotency_key="c"
    )
    assert (status, body["error"]) == (409, "reservation_expired")
    expired = await ledger.expire_due()
    assert [(p, r.status) for p, r in expired] == [("p", 200)]
    assert expired[0][1].body["op"] == "expire" and expired[0][1].body["actor"] == "server"
    assert await ledger.expire_due() == []  # once only
    balances = await ledger.balances("p")
    assert balances is not None and balances.reserved == parse_amount(5)
    status, body = await _op(
        ledger, "p", op="release", reservation_id=short["reservation_id"], idempotency_key="r"
    )
    assert (status, body["error"]) == (409, "reservation_closed")
    assert "expired" in body["detail"]
    assert long["reservation_id"] != short["reservation_id"]


async def test_unknown_project_is_not_found_and_stores_nothing(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    status, body = await _op(ledger, "ghost", op="charge", amount=1, idempotency_key="k")
    assert (status, body["error"]) == (404, "not_found")
    assert await store.db.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_the_database_refuses_overspend_itself(store: DocumentStore) -> None:
    await _project(store, "p", "10")
    with pytest.raises(Exception, match=r"(?i)check"):
        await store.db.execute(
            "UPDATE budget_accounts SET spent = total + 1 WHERE project_id = $1", "p"
        )


async def test_old_keys_are_pruned_after_the_retention(
    store: DocumentStore, ledger: BudgetLedger
) -> None:
    await _project(store, "p", "10")
    await _op(ledger, "p", op="charge", amount=1, idempotency_key="old")
    await _op(ledger, "p", op="charge", amount=1, idempotency_key="new")
    # Age one key past the retention, the other just inside it.
    keep = await store.db.fetchval(
        "SELECT created_at FROM idempotency_keys WHERE idempotency_key = 'new'"
    )
    await store.db.execute(
        "UPDATE idempotency_keys SET created_at = $1 WHERE idempotency_key = 'old'",
        keep - timedelta(seconds=KEY_RETENTION_S + 60),
    )
    await store.db.execute(
        "UPDATE idempotency_keys SET created_at = $1 WHERE idempotency_key = 'new'",
        keep - timedelta(seconds=KEY_RETENTION_S - 60),
    )
    assert await ledger.prune_keys() == 1
    rows = await store.db.fetch("SELECT idempotency_key FROM idempotency_keys")
    assert [r[0] for r in rows] == ["new"]


async def test_one_failing_op_does_not_fail_its_batch(tmp_path: Path) -> None:
    # Postgres refuses a NUL character in text: a real statement failure inside a batch.
    url = await create_database()
    store = make_store(url, tmp_path)
    await store.open(migrate_schema=True)
    ledger = BudgetLedger(store.db)
    ledger.start()
    try:
        await _project(store, "p", "100")
        good = [BudgetOp("charge", 10_000, f"k{i}") for i in range(20)]
        bad = BudgetOp("charge", 10_000, "bad", ref="nul\x00byte")
        results = await asyncio.gather(
            *(ledger.submit("p", op, "t") for op in [*good[:10], bad, *good[10:]]),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], LedgerUnavailable)
        assert all(r.status == 200 for r in results if not isinstance(r, BaseException))
        assert (await ledger.balances("p")).spent == 20 * 10_000  # type: ignore[union-attr]
        assert len(await _all_entries(ledger, "p")) == 20
    finally:
        await ledger.stop(5)
        await store.close()
        await drop_database(url)
