"""A concurrent budget workload with duplicate requests, and the checks of its outcome.

Used against the ledger directly and against real servers, so both are held to the same
standard: every duplicate answered identically, one effect per key, the ledger summing
exactly to the balances, and no state in which `reserved + spent > total`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]

AMOUNTS = (1, 2, "2.5", "7.25", 12, "0.0001")


@dataclass
class Outcome:
    """Every reply each key got (several when it was sent several times)."""

    replies: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    duplicated: int = 0

    def first(self, key: str) -> tuple[int, dict[str, Any]]:
        return self.replies[key][0]


async def run_workload(send: Send, *, workers: int = 64, rounds: int = 6, seed: int = 7) -> Outcome:
    """`workers` clients, each doing `rounds` of reserve-then-commit/release or charge;
    about a third of the requests are sent twice at the same moment."""
    outcome = Outcome()

    async def request(rng: random.Random, key: str, body: dict[str, Any]) -> dict[str, Any]:
        copies = 2 if rng.random() < 0.35 else 1
        outcome.duplicated += copies - 1
        body = {**body, "idempotency_key": key}
        replies = await asyncio.gather(*(send(body) for _ in range(copies)))
        outcome.replies[key] = list(replies)
        return replies[0][1] if replies[0][0] == 200 else {}

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        for turn in range(rounds):
            key = f"w{index}-t{turn}"
            amount = rng.choice(AMOUNTS)
            if rng.random() < 0.3:
                await request(rng, key, {"op": "charge", "amount": amount, "ref": key})
                continue
            reserved = await request(rng, key, {"op": "reserve", "amount": amount})
            if not reserved:
                continue
            rid = reserved["reservation_id"]
            follow = rng.choice(("commit", "commit_part", "release", "keep"))
            if follow == "commit":
                await request(rng, f"{key}-c", {"op": "commit", "reservation_id": rid})
            elif follow == "commit_part":
                half = (Decimal(str(amount)) / 2).quantize(Decimal("0.0001"), ROUND_DOWN)
                body = {"op": "commit", "reservation_id": rid, "amount": str(half)}
                await request(rng, f"{key}-c", body)
            elif follow == "release":
                await request(rng, f"{key}-r", {"op": "release", "reservation_id": rid})

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return outcome


def _units(value: float | int) -> int:
    return int((Decimal(str(value)) * 10_000).to_integral_value())


def check_outcome(
    outcome: Outcome, ledger: list[dict[str, Any]], balances: dict[str, Any], total: int
) -> None:
    """Assert every property the ledger promises about `outcome`."""
    # Every duplicate got the same status and body.
    for key, replies in outcome.replies.items():
        assert all(reply == replies[0] for reply in replies), key
    # One ledger row per key that succeeded, carrying exactly the reply; none for refusals.
    by_key = {row["idempotency_key"]: row for row in ledger}
    assert len(by_key) == len(ledger), "a key took effect twice"
    succeeded = {key for key, replies in outcome.replies.items() if replies[0][0] == 200}
    assert set(by_key) == succeeded
    for key in succeeded:
        assert by_key[key] == outcome.first(key)[1], key
    statuses = {replies[0][0] for replies in outcome.replies.values()}
    assert statuses <= {200, 409}, statuses
    check_ledger(ledger, balances, total)


def check_ledger(ledger: list[dict[str, Any]], balances: dict[str, Any], total: Any) -> None:
    """op_ids are gap-free, and replaying the rows from `total` gives each row's
    balances and the final ones: the ledger sums exactly to the balances, and no row
    shows `reserved + spent > total`."""
    assert [row["op_id"] for row in ledger] == list(range(1, len(ledger) + 1))
    state = {"total": _units(total), "reserved": 0, "spent": 0}
    for row in ledger:
        amount = _units(row["amount"])
        if row["op"] == "reserve":
            state["reserved"] += amount
        elif row["op"] == "charge":
            state["spent"] += amount
        elif row["op"] == "commit":
            state["reserved"] -= amount + _units(row["released"])
            state["spent"] += amount
        elif row["op"] in ("release", "expire"):
            state["reserved"] -= amount
        elif row["op"] == "topup":
            state["total"] += amount
        after = {name: _units(row["balances"][name]) for name in state}
        assert after == state, row
        assert state["reserved"] >= 0 and state["spent"] >= 0
        assert state["reserved"] + state["spent"] <= state["total"], row
        assert _units(row["balances"]["available"]) == (
            state["total"] - state["reserved"] - state["spent"]
        )
    assert {name: _units(balances[name]) for name in state} == state
