"""The document's view of the authoritative state: the `budget` root and each leased
task's `assignee`, `lease_holder` and `lease_expires_at` (DESIGN.md sections 1 and 4).

The database decides; the mirror only shows its decisions live to editors and agents,
written with a server origin (`Room.server_write`). Mirror writes are coalesced per
project (a burst of ops makes one document update carrying the newest state), never go
backwards (an older version than the one shown is skipped), and are redone from the
database whenever a room loads, so a crash between a commit and its mirror heals on
the next load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map

from blackboard.persistence.clock import to_iso
from blackboard.persistence.tasks import cancel_and_wait
from blackboard.schemas.money import to_number
from blackboard.sync.authority.leases import Lease, LeaseStore
from blackboard.sync.authority.ledger import Balances, BudgetLedger
from blackboard.sync.room.extensions import Extension

if TYPE_CHECKING:
    from blackboard.sync.room.room import Room
    from blackboard.sync.room.rooms import RoomManager

log = logging.getLogger(__name__)


def write_budget(root: Map, balances: Balances) -> None:
    """Show `balances` in the `budget` root unless it shows a newer version already."""
    shown = root.get("version")
    if isinstance(shown, int | float) and shown >= balances.version and "total" in root:
        return
    values: dict[str, Any] = {
        "total": float(to_number(balances.total)),
        "reserved": float(to_number(balances.reserved)),
        "spent": float(to_number(balances.spent)),
        "available": float(to_number(balances.available)),
        "currency": balances.currency,
        "version": float(balances.version),
        "updated_at": to_iso(balances.updated_at),
    }
    for name, value in values.items():
        if root.get(name) != value:  # an unchanged field makes no update
            root[name] = value


def write_lease(tasks: Map, lease: Lease) -> None:
    """Show `lease` in its task (a task no longer in the document is left alone)."""
    task = tasks.get(lease.task_id)
    if not isinstance(task, Map):
        return
    if lease.holder is None:
        for name in ("lease_holder", "lease_expires_at"):
            if name in task:
                del task[name]
        return
    assert lease.expires_at is not None
    values = {
        "assignee": lease.holder,
        "lease_holder": lease.holder,
        "lease_expires_at": to_iso(lease.expires_at),
    }
    for name, value in values.items():
        if task.get(name) != value:
            task[name] = value


@dataclass
class _Pending:
    balances: Balances | None = None
    leases: dict[str, Lease] = field(default_factory=dict)


class AuthorityMirror(Extension):
    def __init__(self, ledger: BudgetLedger, leases: LeaseStore) -> None:
        self._ledger = ledger
        self._leases = leases
        self._rooms: RoomManager | None = None
        self._pending: dict[str, _Pending] = {}
        # Newest lease version shown, per loaded project and task.
        self._lease_versions: dict[str, dict[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, rooms: RoomManager) -> None:
        """The rooms to write to (built after this extension, which they call)."""
        self._rooms = rooms

    def budget(self, project_id: str, balances: Balances) -> None:
        pending = self._pending_for(project_id)
        if pending.balances is None or balances.version > pending.balances.version:
            pending.balances = balances

    def lease(self, lease: Lease) -> None:
        pending = self._pending_for(lease.project_id)
        queued = pending.leases.get(lease.task_id)
        if queued is None or lease.version > queued.version:
            pending.leases[lease.task_id] = lease

    def _pending_for(self, project_id: str) -> _Pending:
        pending = self._pending.get(project_id)
        if pending is None:
            pending = self._pending[project_id] = _Pending()
            self._spawn(self._flush(project_id))
        return pending

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, project_id: str) -> None:
        assert self._rooms is not None, "bind() the room manager first"
        try:
            room = await self._rooms.get(project_id)
        except Exception as exc:  # the next load redoes the mirror from the database
            self._pending.pop(project_id, None)
            log.warning(
                "mirror of %s not written: %s", project_id, exc, extra={"project_id": project_id}
            )
            return
        # No await from here on: whatever arrives later starts a new flush.
        pending = self._pending.pop(project_id)
        try:
            room.server_write(lambda doc: self._write(doc, project_id, pending))
        except Exception as exc:  # e.g. shutting down; the next load redoes it
            log.warning(
                "mirror of %s not written: %s", project_id, exc, extra={"project_id": project_id}
            )

    def _write(self, doc: Doc, project_id: str, pending: _Pending) -> None:
        if pending.balances is not None:
            write_budget(doc.get("budget", type=Map), pending.balances)
        shown = self._lease_versions.setdefault(project_id, {})
        tasks = doc.get("tasks", type=Map)
        for task_id, lease in pending.leases.items():
            if lease.version > shown.get(task_id, -1):
                shown[task_id] = lease.version
                write_lease(tasks, lease)

    async def _reconcile(self, project_id: str) -> None:
        try:
            balances = await self._ledger.balances(project_id)
            leases = await self._leases.leases(project_id)
        except Exception as exc:
            log.warning(
                "mirror of %s not checked: %s", project_id, exc, extra={"project_id": project_id}
            )
            return
        if balances is not None:
            self.budget(project_id, balances)
        for lease in leases:
            self.lease(lease)

    # --- room lifecycle (Extension) -------------------------------------------------

    def on_loaded(self, room: Room) -> None:
        self._spawn(self._reconcile(room.project_id))

    def on_unloaded(self, room: Room) -> None:
        self._lease_versions.pop(room.project_id, None)

    async def close(self, timeout_s: float) -> None:
        """Let pending mirror writes finish (at most `timeout_s`), then cancel the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            await cancel_and_wait(late)
