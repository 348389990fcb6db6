"""Creating a project: its row, its first update (spec and budget mirror) and its budget
account at once. Budget amounts are integer units (blackboard.schemas.money)."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from blackboard.persistence.clock import utc_now
from blackboard.persistence.records import ProjectRecord
from blackboard.persistence.store import Store
from blackboard.sync.authority.ledger import Balances, account_opener
from blackboard.sync.authority.mirror import write_budget
from blackboard.sync.room.origin import SERVER_ACTOR
from blackboard.sync.rules.shape import to_shared


def initial_update(title: str, budget_total: int, currency: str, spec: dict[str, Any]) -> bytes:
    doc = Doc()
    with doc.transaction(origin=SERVER_ACTOR):
        spec_root = doc.get("spec", type=Map)
        for key, value in spec.items():
            spec_root[key] = to_shared(value)
        spec_root["title"] = title
        opened = Balances(currency, budget_total, 0, 0, 0, utc_now())
        write_budget(doc.get("budget", type=Map), opened)
    return doc.get_update()


async def create_project(
    store: Store,
    project_id: str,
    title: str,
    budget_total: int,
    currency: str,
    spec: dict[str, Any],
    actor: str,
) -> ProjectRecord:
    update = initial_update(title, budget_total, currency, spec)
    account = account_opener(budget_total, currency)
    return await store.create_project(project_id, title, update, actor, with_rows=account)
