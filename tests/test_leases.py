"""Task leases on both backends (the `store` fixture), driven without HTTP."""

from __future__ import annotations

import asyncio
import itertools

from blackboard.persistence.document_store import DocumentStore
from blackboard.sync.authority.idempotency import Reply
from blackboard.sync.authority.leases import Lease, LeaseRequest, LeaseStore
from blackboard.sync.projects.creation import create_project

_keys = itertools.count()


async def _leases(store: DocumentStore) -> LeaseStore:
    await create_project(store, "p", "p", 0, "USD", {}, "test")
    return LeaseStore(store.db)


async def _act(
    leases: LeaseStore,
    action: str,
    holder: str,
    *,
    token: int | None = None,
    ttl_s: float = 60.0,
    key: str | None = None,
    task: str = "T1",
) -> Reply[Lease]:
    request = LeaseRequest(action, holder, key or f"k{next(_keys)}", ttl_s, token)
    return await leases.apply("p", task, request)


async def test_twenty_claimants_one_winner(store: DocumentStore) -> None:
    leases = await _leases(store)
    replies = await asyncio.gather(*(_act(leases, "claim", f"agent-{i}") for i in range(20)))
    winners = [r for r in replies if r.status == 200]
    assert len(winners) == 1
    won = winners[0].body
    assert won["fencing_token"] == 1 and won["task_id"] == "T1"
    losers = [r for r in replies if r.status != 200]
    assert {(r.status, r.body["error"]) for r in losers} == {(409, "lease_held")}
    assert all(r.body["holder"] == won["holder"] for r in losers)


async def test_renew_and_release_need_the_current_token(store: DocumentStore) -> None:
    leases = await _leases(store)
    claimed = await _act(leases, "claim", "a", ttl_s=30)
    token = claimed.body["fencing_token"]
    renewed = await _act(leases, "renew", "a", token=token, ttl_s=120)
    assert renewed.status == 200 and renewed.body["fencing_token"] == token
    assert renewed.body["expires_at"] > claimed.body["expires_at"]
    wrong = await _act(leases, "renew", "a", token=token + 1)
    assert (wrong.status, wrong.body["error"]) == (409, "stale_token")
    other = await _act(leases, "release", "b", token=token)
    assert (other.status, other.body["error"]) == (409, "stale_token")
    released = await _act(leases, "release", "a", token=token)
    assert released.status == 200
    assert released.body == {
        "action": "release",
        "task_id": "T1",
        "holder": None,
        "fencing_token": token,
        "expires_at": None,
    }
    again = await _act(leases, "release", "a", token=token)
    assert (again.status, again.body["error"]) == (409, "stale_token")
    # Free again: the next grant gets a larger token, never a reused one.
    assert (await _act(leases, "claim", "b")).body["fencing_token"] == token + 1


async def test_expiry_hands_over_with_a_larger_token(store: DocumentStore) -> None:
    leases = await _leases(store)
    first = await _act(leases, "claim", "slow", ttl_s=0.3)
    held = await _act(leases, "claim", "eager")
    assert held.status == 409
    await asyncio.sleep(0.5)  # past the ttl: expiry is judged by the clock, not an event
    second = await _act(leases, "claim", "eager", ttl_s=30)
    assert second.status == 200
    assert second.body["fencing_token"] > first.body["fencing_token"]
    # The paused first holder comes back: refused, whatever it tries.
    token = first.body["fencing_token"]
    for action in ("renew", "release"):
        stale = await _act(leases, action, "slow", token=token)
        assert (stale.status, stale.body["error"]) == (409, "stale_token")
    assert (await leases.leases("p"))[0].holder == "eager"


async def test_the_sweep_frees_expired_leases_once(store: DocumentStore) -> None:
    leases = await _leases(store)
    await _act(leases, "claim", "a", ttl_s=0.2, task="T1")
    await _act(leases, "claim", "b", ttl_s=60, task="T2")
    assert await leases.expire_due() == []
    await asyncio.sleep(0.4)  # past T1's ttl: expiry is judged by the clock, not an event
    freed = await leases.expire_due()
    assert [(lease.task_id, lease.holder, lease.fencing_token) for lease in freed] == [
        ("T1", None, 1)
    ]
    assert await leases.expire_due() == []
    # A late renew of the freed lease is refused.
    late = await _act(leases, "renew", "a", token=1, task="T1")
    assert (late.status, late.body["error"]) == (409, "stale_token")


async def test_a_key_replays_its_first_reply_and_conflicts_on_change(
    store: DocumentStore,
) -> None:
    leases = await _leases(store)
    claims = await asyncio.gather(*(_act(leases, "claim", "a", key="once") for _ in range(10)))
    assert all(c.body == claims[0].body and c.status == 200 for c in claims)
    assert sum(not c.replayed for c in claims) == 1
    conflict = await _act(leases, "claim", "b", key="once")
    assert (conflict.status, conflict.body["error"]) == (409, "idempotency_conflict")
    (lease,) = await leases.leases("p")
    assert (lease.holder, lease.fencing_token) == ("a", 1)
