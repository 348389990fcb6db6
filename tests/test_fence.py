"""Fences (persistence/fence.py): one holder at a time, decided in the database, and a
holder whose fence was taken over cannot write, even in a transaction it began before."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from blackboard.persistence.clock import utc_now
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.fence import FenceLost, Fences
from blackboard.sync.authority import expiry_sweeper
from blackboard.sync.authority.leases import LeaseStore
from blackboard.sync.authority.ledger import BudgetLedger
from blackboard.sync.authority.mirror import AuthorityMirror
from blackboard.sync.projects.creation import create_project
from tests.support.api import eventually

TTL = timedelta(seconds=30)
SHORT = timedelta(milliseconds=200)


async def test_one_holder_at_a_time(store: DocumentStore) -> None:
    a, b = Fences(store.db, "instance-a"), Fences(store.db, "instance-b")
    token = await a.acquire("sweep", TTL)
    assert token is not None and token.epoch == 1
    assert await b.acquire("sweep", TTL) is None
    assert await a.renew(token, TTL)
    assert await b.acquire("other-work", TTL) is not None  # fences are independent
    await a.release(token)
    taken = await b.acquire("sweep", TTL)
    assert taken is not None and taken.epoch == 2
    assert not await a.renew(token, TTL)  # a's grant is over for good


async def test_expired_fence_is_taken_over_and_the_late_holder_cannot_write(
    store: DocumentStore,
) -> None:
    a, b = Fences(store.db, "instance-a"), Fences(store.db, "instance-b")
    stale = await a.acquire("sweep", SHORT)
    assert stale is not None
    await asyncio.sleep(SHORT.total_seconds() * 2)  # a "pauses" past its fence (a clock)
    current = await b.acquire("sweep", TTL)
    assert current is not None and current.epoch == stale.epoch + 1

    # a wakes up and tries to write its (now stale) result: refused, nothing written.
    with pytest.raises(FenceLost):
        async with store.db.transaction() as conn:
            await a.check(conn, stale)
            await conn.execute(
                "INSERT INTO work_fences (name, holder, epoch, expires_at)"
                " VALUES ('written-by-a', 'a', 1, $1)",
                utc_now(),
            )
    assert await count_named(store, "written-by-a") == 0
    assert not await a.renew(stale, TTL)

    # The current holder writes fine.
    async with store.db.transaction() as conn:
        await b.check(conn, current)
        await conn.execute(
            "INSERT INTO work_fences (name, holder, epoch, expires_at)"
            " VALUES ('written-by-b', 'b', 1, $1)",
            utc_now(),
        )
    assert await count_named(store, "written-by-b") == 1


async def test_many_contenders_one_winner(store: DocumentStore) -> None:
    contenders = [Fences(store.db, f"instance-{i}") for i in range(12)]
    tokens = await asyncio.gather(*(c.acquire("compact:film", TTL) for c in contenders))
    assert sum(t is not None for t in tokens) == 1


async def test_held_releases_at_the_end_even_on_error(store: DocumentStore) -> None:
    a, b = Fences(store.db, "instance-a"), Fences(store.db, "instance-b")
    with pytest.raises(RuntimeError):
        async with a.held("export", TTL) as token:
            assert token is not None
            async with b.held("export", TTL) as other:
                assert other is None  # busy: b skips the work
            raise RuntimeError("the work failed")
    async with b.held("export", TTL) as token:
        assert token is not None


async def test_sweeps_run_on_one_instance_at_a_time(store: DocumentStore) -> None:
    """Two instances' expiry sweepers: only the fence holder sweeps; the other takes over
    when the holder stops (it releases its fence)."""
    await create_project(store, "film", "Film", 100, "USD", {}, actor="test")
    sweeps: list[str] = []

    class CountingSweeper(expiry_sweeper.ExpirySweeper):
        def __init__(self, name: str) -> None:
            ledger = BudgetLedger(store.db)
            leases = LeaseStore(store.db)
            super().__init__(
                ledger, leases, AuthorityMirror(ledger, leases), Fences(store.db, name)
            )
            self.name = name

        async def sweep(self) -> None:
            sweeps.append(self.name)

    first, second = CountingSweeper("a"), CountingSweeper("b")
    first.start()
    await eventually(lambda: _swept(sweeps, "a"))  # a holds the fence
    second.start()
    # Sweeps b could make if the fence did not stop it (nothing to wait for).
    await asyncio.sleep(expiry_sweeper.SWEEP_INTERVAL_S * 2.5)
    assert sweeps and set(sweeps) == {"a"}
    await first.stop()
    sweeps.clear()
    await eventually(lambda: _swept(sweeps, "b"))  # b takes over once a released
    await second.stop()
    assert set(sweeps) == {"b"} and sweeps


def _swept(sweeps: list[str], name: str) -> None:
    assert name in sweeps


async def count_named(store: DocumentStore, name: str) -> int:
    return await store.db.fetchval("SELECT count(*) FROM work_fences WHERE name = $1", name)
