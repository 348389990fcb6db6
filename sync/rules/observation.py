"""Observing a live document: which paths each transaction changed, and by whom."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Map, ReadTransaction, Subscription, TransactionEvent
from pycrdt._pycrdt import MapEvent as RawMapEvent

from blackboard.schemas.document import ROOTS_BY_NAME, Lattice, Root
from blackboard.sync.room.origin import SERVER_ACTOR, Origin, Source
from blackboard.sync.rules.correction import Path
from blackboard.sync.rules.lattice import FieldWrite, LatticeTracker
from blackboard.sync.wire.yjs_structs import struct_count

log = logging.getLogger(__name__)

_MAX_UNSETTLED = 16  # client transactions waiting for their review (normally one)


class ChangeObserver:
    """Collects the paths clients (here or on other instances) changed, hands the
    server's writes to `on_server_write`, and feeds each transaction's lattice writes to
    the tracker. Which entries changed comes from the type-level events of each root:
    they carry the real transaction origin, so the server's own writes are never taken
    for a client's.

    The roots are observed through their integrated (Rust) types: pycrdt's own deep
    observers wrap every attribute of every event in Python first (its target, its
    changed values), which cost more than the apply itself; only the path, the changed
    keys of a Map and the origin are read here."""

    def __init__(
        self,
        doc: Doc,
        roots: dict[str, Map],
        lattice: LatticeTracker,
        on_server_write: Callable[[Root, Path], None],
    ) -> None:
        """The owner hands every transaction of `doc` to `on_transaction` (it observes
        `doc`: pycrdt encodes the update once per observer, so one serves all)."""
        self._doc = doc
        self._lattice = lattice
        self._on_server_write = on_server_write
        self._touched: dict[Path, None] = {}  # an ordered set
        self._origin: Any = None  # the running transaction's origin (type-level events)
        self._lattice_changed = False  # by the running transaction: read its structs
        self._plain_writes = 0  # of the running transaction (see `_plain_writes`)
        self._unsettled: deque[tuple[Any, list[FieldWrite]]] = deque()
        self._subscriptions: list[Subscription] = [
            shared.integrated.observe_deep(self._events_of(ROOTS_BY_NAME[name]))
            for name, shared in roots.items()
        ]

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.drop()

    def settle(self, update: bytes, origin: Origin) -> None:
        """Fold the lattice writes of the client and peer transactions observed since
        the last call; `update` is what `origin` sent (it keeps values it lost)."""
        while self._unsettled:
            owner, fields = self._unsettled.popleft()
            self._settle(owner, fields, update if owner is origin else None)

    def take_touched(self) -> list[Path]:
        """The paths changed by others than this server since the last call."""
        touched, self._touched = list(self._touched), {}
        return touched

    # --- observers (they must never raise: a raise would surface in the transaction) --

    def _events_of(self, root: Root) -> Callable[[list[Any]], None]:
        # A path is (root, key) or (root, entry, field); deeper changes count for the
        # field (or root key) they happened in.
        name, depth, lattice = root.name, 2 if root.keyed_by_id else 1, root.lattice

        def on_events(events: list[Any]) -> None:
            try:
                raw = events[0].transaction
                # What `ReadTransaction(doc, raw).origin` looks up, without the object.
                self._origin = origin = self._doc._origins.get(raw.origin())
                source = origin.source if isinstance(origin, Origin) else None
                # The server's writes, here or on another instance, are the truth of
                # what only it writes; another instance's client writes are not. Only
                # they are read, through the event's transaction (entering it costs
                # more than the rest of a client's event).
                if source is Source.SERVER or (
                    source is Source.PEER and origin.actor == SERVER_ACTOR
                ):
                    with ReadTransaction(self._doc, raw):
                        for event in events:
                            for path in self._paths(name, depth, lattice, event):
                                self._on_server_write(root, path)
                                if source is not Source.SERVER:
                                    self._touched[path] = None
                    return
                touched = self._touched
                for event in events:
                    for path in self._paths(name, depth, lattice, event):
                        touched[path] = None
            except Exception:
                log.exception("repair: reading the events of %s failed", name)

        return on_events

    def _paths(self, name: str, depth: int, lattice: Lattice | None, event: Any) -> list[Path]:
        inside = event.path
        if len(inside) >= depth:
            return [(name, *map(str, inside[:depth]))]
        keys = event.keys if isinstance(event, RawMapEvent) else {}
        if lattice is not None:
            plain = _plain_writes(lattice, inside, keys)
            if plain is None:
                self._lattice_changed = True
            else:
                self._plain_writes += plain
        return [(name, *map(str, inside), key) for key in keys]

    def on_transaction(self, event: TransactionEvent) -> None:
        try:
            origin, self._origin = self._origin, None
            # Reading the structs is only needed when a lattice root changed, and not
            # when every struct is a write that shows, of a field no lattice decides: a
            # status write that lost a race shows in no event, but it is a struct too.
            changed, self._lattice_changed = self._lattice_changed, False
            plain, self._plain_writes = self._plain_writes, 0
            if not changed and not plain:
                return  # no lattice root changed: no write to index or settle
            if origin is not None and hash(origin) != event.transaction.origin():
                origin = None  # no type-level event ran for this transaction
            update = event.update
            if not changed:
                changed = struct_count(update) != plain
            fields = self._lattice.index(update) if changed else []
            if not fields:
                return
            source = origin.source if isinstance(origin, Origin) else None
            if source in (Source.CLIENT, Source.PEER):
                # Settled by `settle`, with the update as sent (it keeps lost values).
                self._unsettled.append((origin, fields))
                while len(self._unsettled) > _MAX_UNSETTLED:
                    self._settle(*self._unsettled.popleft(), None)
            else:
                self._lattice.settle(fields, None, server=source is Source.SERVER, here=True)
        except Exception:
            log.exception("repair: reading a transaction failed")

    def _settle(self, origin: Any, fields: list[FieldWrite], sent: bytes | None) -> None:
        here = isinstance(origin, Origin) and origin.source is Source.CLIENT
        self._lattice.settle(fields, sent, server=False, here=here)


def _plain_writes(lattice: Lattice, path: list[Any], keys: dict[str, Any]) -> int | None:
    """How many writes an event of a lattice root shows, if they are all new values of
    an entry's fields the lattice does not decide (a shot's title); else None (an entry
    added or removed, a field removed, a lattice field written: read the structs)."""
    if len(path) != 1 or not keys:
        return None
    for key, change in keys.items():
        if key in lattice.fields or change["action"] not in ("add", "update"):
            return None
    return len(keys)
