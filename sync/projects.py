"""Creating a project: its row and its first update (spec and budget mirror) at once."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from persistence.clock import to_iso, utc_now
from persistence.records import ProjectRecord
from persistence.store import Store
from sync.origin import SERVER_ACTOR
from sync.shape import to_shared


def initial_update(title: str, budget_total: float, currency: str, spec: dict[str, Any]) -> bytes:
    doc = Doc()
    with doc.transaction(origin=SERVER_ACTOR):
        spec_root = doc.get("spec", type=Map)
        for key, value in spec.items():
            spec_root[key] = to_shared(value)
        spec_root["title"] = title
        budget = doc.get("budget", type=Map)
        budget.update(
            {
                "total": float(budget_total),
                "reserved": 0.0,
                "spent": 0.0,
                "available": float(budget_total),
                "currency": currency,
                "version": 0.0,
                "updated_at": to_iso(utc_now()),
            }
        )
    return doc.get_update()


async def create_project(
    store: Store,
    project_id: str,
    title: str,
    budget_total: float,
    currency: str,
    spec: dict[str, Any],
    actor: str,
) -> ProjectRecord:
    update = initial_update(title, budget_total, currency, spec)
    return await store.create_project(project_id, title, update, actor)
