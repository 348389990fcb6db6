"""The lattice maximum of every status field, from every value ever written to it.

A Y.Map keeps the last writer's value only, so the maximum must be remembered. And not
only values the Doc showed: of two concurrent writes the one from the higher client id
wins the map key, whatever their order of arrival, and the loser is never visible. If
the loser was the higher status, a server that only looked at the Doc would keep it or
not depending on arrival order. So this tracker reads the structs of each update
(`sync.wire.yjs_structs`) and folds every written value into its entry's maximum. The result
depends only on the set of updates, never on their order.

Entries are tracked per instance: the nested Map an entry key holds (replacing it
starts a new entry). For a lattice with an epoch (task `attempt`, shot `revision`), a
status value counts for the epoch it was written in: the epoch its writer set in the
same update, else the epoch of the status it overwrote (its origin), else the entry's
current epoch. The server's own writes count for the current epoch (over a status of
another epoch it writes the epoch too, so other instances count them alike).

What this process learns of each lattice write it accepts (value, epoch) goes into the
log with it (`take_record`, `sync.rules.status_epochs`): a document keeps neither lost values
nor epochs, so only that record lets a reloaded tracker know the same maxima and judge a
stale replica's write exactly as the live one would have. A loaded document may show
less than its maximum (a break only two instances' updates made together, loaded before
either repaired it): such entries start dirty.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pycrdt import Doc, Map
from pycrdt._base import BaseType

from blackboard.schemas.document import ROOTS, Kind, Lattice, Root
from blackboard.sync.rules import status_epochs
from blackboard.sync.rules.field_rules import conform
from blackboard.sync.rules.status_epochs import Epoch
from blackboard.sync.wire.protocol import ProtocolError
from blackboard.sync.wire.yjs_encoding import DeleteRange
from blackboard.sync.wire.yjs_structs import (
    ANY,
    JSON_CONTENT,
    NO_VALUE,
    TYPE,
    TYPE_MAP,
    DecodedUpdate,
    Id,
    Item,
    decode_update,
)

log = logging.getLogger(__name__)

_V = TypeVar("_V")

# Each lattice entry's (status, epoch) as a document shows them, by (root, entry key).
Shown = dict[tuple[str, str], tuple[object, object]]


@dataclass(eq=False)
class _Slot:
    """One value an entry key of a lattice root has held (a nested Map, or not)."""

    root: Root
    key: str
    item: Id
    is_map: bool
    deleted: bool = False
    epoch: Epoch = 0.0
    best: dict[Epoch, str] = field(default_factory=dict)  # lattice maximum per epoch
    shown: dict[int, FieldWrite] = field(default_factory=dict)  # its writes not deleted

    @property
    def lattice(self) -> Lattice:
        assert self.root.lattice is not None
        return self.root.lattice

    def newest_shown(self, key: str | None) -> FieldWrite | None:
        """The write of `key` (status or epoch) the entry shows."""
        newest = None
        for f in self.shown.values():  # a loop, not a list: this runs for every check
            if f.key == key and (newest is None or f.item > newest.item):
                newest = f
        return newest


@dataclass(eq=False)
class FieldWrite:
    """One write of a status or epoch field inside a slot (one struct: yrs may merge a
    run of deleted writes into one). Callers only hand what `index` returns to `settle`."""

    slot: _Slot
    key: str
    item: Id
    length: int
    origin: Id | None
    written: Item | None = None  # the struct as integrated, until settled
    deleted: bool = False
    settled: bool = False  # its value (if any) and epoch are folded in
    here: bool = False  # accepted by this process (from its client, or its own write)


_Ref = _Slot | FieldWrite
_Written = list[tuple[int, object]]  # (clock, value) of each write a field holds


@dataclass(frozen=True)
class Target:
    """What an entry's lattice fields must show: its maximum."""

    status: str | None
    epoch: Epoch | None  # None for lattices without an epoch
    # The status shown was written for another epoch (maybe with the same value), or
    # none is shown: it must be written again, with the epoch, or writes based on it
    # would count for another epoch.
    stale: bool = False
    # This process accepted the write the entry shows (its status, else its epoch): of
    # several instances that see a break, that one repairs it first (`sync.rules.repair`).
    owned: bool = False


class _Ranges(Generic[_V]):
    """Item ids of one client -> what they belong to (sorted by clock)."""

    __slots__ = ("ends", "starts", "values")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.values: list[_V] = []

    def add(self, start: int, end: int, value: _V) -> None:
        i = bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        self.values.insert(i, value)

    def find(self, clock: int) -> _V | None:
        i = bisect_right(self.starts, clock) - 1
        return self.values[i] if i >= 0 and clock < self.ends[i] else None

    def overlapping(self, start: int, end: int) -> Iterable[_V]:
        i = max(bisect_right(self.starts, start) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            if self.ends[i] > start:
                yield self.values[i]
            i += 1


class LatticeTracker:
    def __init__(self) -> None:
        self._lattice_roots = {root.name: root for root in ROOTS if root.lattice}
        self._ids: dict[int, _Ranges[_Ref]] = {}
        # The epoch of each status write by item id (NaN: stale). Kept apart from the
        # fields because one loaded struct may hold several writes of different epochs.
        self._epochs: dict[int, _Ranges[Epoch]] = {}
        self._record = bytearray()  # epochs settled here since `take_record`
        self._slots: dict[tuple[str, str], dict[int, _Slot]] = {}  # not deleted (one)
        self.dirty: set[tuple[str, str]] = set()  # (root, entry key) to check
        self._last: tuple[bytes, DecodedUpdate] | None = None  # read once, used twice

    @classmethod
    def of_document(
        cls, doc: Doc, record: bytes = b"", encoded: bytes | None = None
    ) -> LatticeTracker:
        """The tracker of a loaded document and its stored `record` of status epochs.
        Reading its structs takes Python time in proportion to its size, so a room runs
        this in a worker thread before it goes live (nothing else touches the Doc).
        `encoded`: the document as one update, if at hand (encoding it again holds the
        GIL, about 50 ms for 20 MB)."""
        tracker = cls()
        state = doc.get_update() if encoded is None else encoded
        tracker.load(state, shown_entries(doc), record)
        return tracker

    # --- reading updates ---------------------------------------------------------

    def load(
        self,
        state: bytes,
        shown: Shown,
        record: bytes = b"",
    ) -> None:
        """Index a loaded document; `shown` is each Map entry's (status, epoch) on screen,
        `record` the stored entries of its lattice writes (`blackboard.sync.rules.status_epochs`).

        A shown status with no stored entry (written before they were stored) counts for
        the shown epoch, and its value for the maximum.
        """
        self.load_part(state)
        self.finish_load(shown, record)

    def load_part(self, part: bytes) -> None:
        """Index one chunk of a loaded document (`sync.wire.yjs_chunks`: each struct
        comes after what it needs), so a big document is indexed a chunk at a time."""
        for f in self.index(part):
            f.settled, f.written = True, None

    def finish_load(self, shown: Shown, record: bytes = b"") -> None:
        """After every `load_part`: `load`'s stored record and shown entries."""
        for _ in self.finishing_load(shown, record):
            pass

    def finishing_load(self, shown: Shown, record: bytes = b"", batch: int = 500) -> Iterator[None]:
        """`finish_load`, pausing after every `batch` shown entries (each entry's work
        touches only its own slot): a caller on an event loop lets the other rooms run
        in between (10,000 entries take about 40 ms)."""
        try:
            for entry in status_epochs.decode(record):
                self._load_entry(entry)
        except ProtocolError as exc:
            log.error("lattice: the stored lattice record is damaged: %s", exc)
        below = set()
        entries = list(shown.items())
        for start in range(0, len(entries), batch):
            yield
            for key, seen in entries[start : start + batch]:
                self._load_shown(key, *seen)
                if self._below_target(key, *seen):
                    below.add(key)
        self.dirty = below  # what loading marked dirty on the way is judged here

    def _load_shown(self, key: tuple[str, str], status: object, epoch: object) -> None:
        slot = self.visible(*key)
        if slot is None:
            return
        if slot.lattice.epoch_field:
            self._raise_epoch(slot, _epoch_value(epoch) or 0.0)
        status_field = slot.newest_shown(slot.lattice.field)
        if status_field is not None and self._stored_epoch(status_field.item) is None:
            self._note_epoch(*status_field.item, status_field.length, slot.epoch)
            if isinstance(status, str):
                self._fold(slot, slot.epoch, status)

    def _load_entry(self, entry: status_epochs.Entry) -> None:
        field = self._lookup((entry.client, entry.clock))
        if not isinstance(field, FieldWrite):
            return  # its entry is gone
        if entry.kind == status_epochs.ATTEMPT:
            if entry.epoch is not None:
                self._raise_epoch(field.slot, entry.epoch)
            return
        self._note_epoch(entry.client, entry.clock, entry.length, entry.epoch)
        if entry.epoch is not None and entry.value is not None:
            self._fold(field.slot, entry.epoch, entry.value)

    def _below_target(self, key: tuple[str, str], status: object, epoch: object) -> bool:
        """Whether a loaded entry shows less than its maximum (`sync.rules.repair` checks it)."""
        target = self.target(*key)
        if target is None:
            return False
        if target.epoch is not None and (_epoch_value(epoch) or 0.0) != target.epoch:
            return True
        return target.status is not None and (status != target.status or target.stale)

    def take_record(self) -> bytes:
        """The epochs of the status writes settled here since the last call, to store
        with the log row being written."""
        record, self._record = bytes(self._record), bytearray()
        return record

    def index(self, update: bytes) -> list[FieldWrite]:
        """Place the new structs of an update the Doc integrated (a transaction's update),
        mark what it deleted; return its new status and epoch writes (not yet settled)."""
        try:
            decoded = self._decode(update)
        except ProtocolError as exc:
            log.warning("lattice: cannot read a transaction update: %s", exc)
            return []
        local = _LocalItems(decoded.items)
        memo: dict[int, _Ref | None] = {}
        fields: dict[int, FieldWrite] = {}
        for item in decoded.items:
            ref = self._place(item, local, memo)
            if isinstance(ref, FieldWrite) and not ref.settled:
                fields[id(ref)] = ref
        self._delete(decoded.deleted)
        return list(fields.values())

    def settle(
        self, fields: list[FieldWrite], sent: bytes | None, *, server: bool, here: bool
    ) -> None:
        """Fold the values of new writes in, with the epoch each belongs to.

        `sent` is the update as its author sent it: it still holds the values of writes
        that lost a race, which the transaction's own update has dropped. `here`: this
        process accepted the update (not a peer instance): its epochs go in the record.
        """
        if not fields:
            return
        values = self._values(fields, sent)
        attempts: dict[tuple[int, int], tuple[int, Epoch]] = {}  # (slot, client) -> newest
        for f in fields:
            if f.key != f.slot.lattice.epoch_field:
                continue
            f.settled, f.here = True, here
            for clock, value in values.get(id(f), ()):
                epoch = _epoch_value(value)
                if epoch is None:
                    continue
                newest = attempts.get((id(f.slot), f.item[0]))
                if newest is None or newest[0] < clock:
                    attempts[(id(f.slot), f.item[0])] = (clock, epoch)
                self._raise_epoch(f.slot, epoch)
                if here:
                    self._keep(f.item[0], clock, 1, status_epochs.ATTEMPT, epoch)
        for f in fields:
            if not f.settled:
                self._settle_status(f, values, attempts, server=server, here=here)

    def _values(self, fields: list[FieldWrite], sent: bytes | None) -> dict[int, _Written]:
        """The values written in each field, as (clock, value): from its own struct, and
        from the update as sent (one field may hold several writes: yrs merges a run of
        deleted ones into one struct)."""
        values: dict[int, _Written] = {}
        complete = True  # every write's value is in its own struct
        for f in fields:
            own = f.written
            if own is not None and own.length == 1 and _value(own) is not NO_VALUE:
                values[id(f)] = [(own.clock, _value(own))]
            else:
                complete = False
            f.written = None
        if sent is not None and not complete:
            waiting = {id(f) for f in fields}
            for item in self._items_of(sent).values():
                value = _value(item)
                ref = self._lookup((item.client, item.clock)) if value is not NO_VALUE else None
                if isinstance(ref, FieldWrite) and id(ref) in waiting:
                    values.setdefault(id(ref), []).append((item.clock, value))
        return values

    def _settle_status(
        self,
        f: FieldWrite,
        values: dict[int, _Written],
        attempts: dict[tuple[int, int], tuple[int, Epoch]],
        *,
        server: bool,
        here: bool,
    ) -> None:
        # The epoch of a write may come from the one it overwrote: settle that first.
        chain = [f]
        while True:
            origin = self._lookup(chain[-1].origin)
            if not isinstance(origin, FieldWrite) or origin.settled or origin in chain:
                break
            chain.append(origin)
        for g in reversed(chain):
            epoch = self._epoch_of(g, attempts, server=server)
            g.settled, g.here = True, here
            self._note_epoch(*g.item, g.length, epoch)
            written = values.get(id(g), [])
            if here:
                for clock, value in written or [(g.item[1], None)]:
                    text = value if isinstance(value, str) else None
                    length = 1 if written else g.length
                    self._keep(g.item[0], clock, length, status_epochs.STATUS, epoch, text)
            if epoch is None:
                continue
            for _, value in written:
                if isinstance(value, str):
                    self._fold(g.slot, epoch, value, shown=not g.deleted)

    def _fold(self, slot: _Slot, epoch: Epoch, value: str, *, shown: bool = True) -> None:
        """Fold a written value into its epoch's maximum. The entry needs a check if the
        maximum rose or the write shows; a write that lost its race, below the maximum,
        changes nothing the entry shows or must show (most of a stale replica's writes)."""
        best = slot.lattice.join(slot.best.get(epoch), value) or value
        if shown or slot.best.get(epoch) != best:
            self.dirty.add((slot.root.name, slot.key))
        slot.best[epoch] = best

    def _keep(
        self,
        client: int,
        clock: int,
        length: int,
        kind: int,
        epoch: Epoch | None,
        value: str | None = None,
    ) -> None:
        """Add a write this process accepted to the record for the log."""
        entry = status_epochs.Entry(client, clock, length, kind, epoch, value)
        self._record += status_epochs.encode_entry(entry)

    def _epoch_of(
        self, f: FieldWrite, attempts: dict[tuple[int, int], tuple[int, Epoch]], *, server: bool
    ) -> Epoch | None:
        slot = f.slot
        if not slot.lattice.epoch_field:
            return 0.0
        if server:
            return slot.epoch
        written = attempts.get((id(slot), f.item[0]))
        if written is not None:
            return written[1]
        if isinstance(self._lookup(f.origin), FieldWrite):
            return self._epoch_at(f.origin)
        return slot.epoch

    def _note_epoch(self, client: int, clock: int, length: int, epoch: Epoch | None) -> None:
        stored = math.nan if epoch is None else epoch
        self._epochs.setdefault(client, _Ranges()).add(clock, clock + length, stored)

    def _stored_epoch(self, id_: Id) -> Epoch | None:
        """The epoch noted for the status write `id_` (NaN: stale), None if none was."""
        ranges = self._epochs.get(id_[0])
        return ranges.find(id_[1]) if ranges else None

    def _epoch_at(self, id_: Id | None) -> Epoch | None:
        """The epoch the status write `id_` counts for; None if stale or unknown."""
        epoch = self._stored_epoch(id_) if id_ is not None else None
        return None if epoch is None or math.isnan(epoch) else epoch

    def _raise_epoch(self, slot: _Slot, epoch: Epoch) -> None:
        if epoch > slot.epoch:
            slot.epoch = epoch
            self.dirty.add((slot.root.name, slot.key))

    # --- what entries must show --------------------------------------------------

    def visible(self, root_name: str, key: str) -> _Slot | None:
        """The Map an entry key shows now (the one slot of that key not deleted)."""
        shown = self._slots.get((root_name, key))
        if not shown:
            return None
        if len(shown) == 1:
            (slot,) = shown.values()
        else:
            slot = max(shown.values(), key=lambda s: s.item)
        return slot if slot.is_map else None

    def target(self, root_name: str, key: str) -> Target | None:
        slot = self.visible(root_name, key)
        if slot is None:
            return None
        lattice = slot.lattice
        status_field = slot.newest_shown(lattice.field)
        owner = status_field or slot.newest_shown(lattice.epoch_field)
        owned = owner is not None and owner.here
        status = slot.best.get(slot.epoch)
        if lattice.epoch_field is None:
            return Target(status, None, owned=owned)
        if status is None and slot.best:
            status = lattice.bottom  # a retry with no status yet restarts it
        stale = status_field is None or self._epoch_at(status_field.item) != slot.epoch
        return Target(status, slot.epoch, stale, owned)

    # --- the index -----------------------------------------------------------------

    def _lookup(self, id_: Id | None) -> _Ref | None:
        """The slot or field whose struct holds `id_`."""
        if id_ is None:
            return None
        ranges = self._ids.get(id_[0])
        return ranges.find(id_[1]) if ranges else None

    def _add(self, item: Item, ref: _Ref) -> None:
        self._ids.setdefault(item.client, _Ranges()).add(item.clock, item.clock + item.length, ref)

    def _place(self, item: Item, local: _LocalItems, memo: dict[int, _Ref | None]) -> _Ref | None:
        """The slot or field `item` belongs to (None if it is none of ours); dependencies
        inside the same update are placed first, without recursion."""
        stack = [item]
        on_stack = {id(item)}
        while stack:
            current = stack[-1]
            if id(current) in memo:
                on_stack.discard(id(stack.pop()))
                continue
            # (A transaction's update, or a loaded state, holds each struct once.)
            dependency = current.origin or current.right_origin or current.parent_id
            parent = self._lookup(dependency)
            if dependency is not None and parent is None:
                other = local.find(dependency)
                if other is not None and id(other) not in memo and id(other) not in on_stack:
                    stack.append(other)
                    on_stack.add(id(other))
                    continue
                parent = memo.get(id(other)) if other is not None else None
            memo[id(current)] = self._new_ref(current, parent)
        return memo[id(item)]

    def _new_ref(self, item: Item, parent: _Ref | None) -> _Ref | None:
        ref: _Ref | None = None
        if item.parent_root is not None:
            root = self._lattice_roots.get(item.parent_root)
            if root is not None and item.key is not None:
                ref = self._new_slot(root, item.key, item)
        elif item.parent_id is not None:
            if isinstance(parent, _Slot) and parent.is_map and parent.item == item.parent_id:
                lattice = parent.lattice
                if item.key in (lattice.field, lattice.epoch_field):
                    ref = self._new_field(parent, item.key, item)
        elif isinstance(parent, _Slot):  # a newer value of the same entry key
            ref = self._new_slot(parent.root, parent.key, item)
        elif isinstance(parent, FieldWrite):  # a newer write of the same field
            ref = self._new_field(parent.slot, parent.key, item)
        if ref is not None:
            self._add(item, ref)
        return ref

    @staticmethod
    def _new_field(slot: _Slot, key: str, item: Item) -> FieldWrite:
        written = FieldWrite(slot, key, (item.client, item.clock), item.length, item.origin, item)
        slot.shown[id(written)] = written
        return written

    def _new_slot(self, root: Root, key: str, item: Item) -> _Slot:
        is_map = item.kind == TYPE and item.type_ref == TYPE_MAP
        slot = _Slot(root, key, (item.client, item.clock), is_map)
        self._slots.setdefault((root.name, key), {})[id(slot)] = slot
        self.dirty.add((root.name, key))
        return slot

    def _delete(self, ranges: list[DeleteRange]) -> None:
        for r in ranges:
            client_ranges = self._ids.get(r.client)
            if client_ranges is None:
                continue
            for ref in client_ranges.overlapping(r.clock, r.end):
                if not ref.deleted:
                    ref.deleted = True
                    if isinstance(ref, _Slot):
                        self._slots[(ref.root.name, ref.key)].pop(id(ref), None)
                        self.dirty.add((ref.root.name, ref.key))
                    else:
                        ref.slot.shown.pop(id(ref), None)

    def _items_of(self, update: bytes) -> dict[Id, Item]:
        try:
            return {(i.client, i.clock): i for i in self._decode(update).items}
        except ProtocolError as exc:
            log.warning("lattice: cannot read a client update: %s", exc)
            return {}

    def _decode(self, update: bytes) -> DecodedUpdate:
        # A client's update and its transaction's update are most often the same bytes.
        if self._last is not None and self._last[0] == update:
            return self._last[1]
        decoded = decode_update(update)
        self._last = (update, decoded)
        return decoded


def shown_entries(doc: Doc) -> Shown:
    """Each lattice entry's (status, epoch) as the document shows them. Entry by entry:
    `to_py` of a whole root would convert every other field too (a 20 MB document: 0.2 s
    with the GIL held, against 60 ms)."""
    shown: Shown = {}
    for root in ROOTS:
        lattice = root.lattice
        if lattice is None:
            continue
        for key, entry in doc.get(root.name, type=Map).items():
            if isinstance(entry, Map | dict):  # a nested Map, or a plain object value
                epoch = _py(entry.get(lattice.epoch_field)) if lattice.epoch_field else 0
                shown[(root.name, key)] = (_py(entry.get(lattice.field)), epoch)
    return shown


def _py(value: object) -> object:
    """A field's value as `to_py` gives it (a shared type converted too)."""
    return value.to_py() if isinstance(value, BaseType) else value


class _LocalItems:
    """The items of one update by id, to place dependencies within the same update
    (sorted on first use: most updates never need it)."""

    def __init__(self, items: list[Item]) -> None:
        self._items = items
        self._by_client: dict[int, tuple[list[int], list[Item]]] | None = None

    def find(self, id_: Id) -> Item | None:
        if len(self._items) == 1:
            return None  # a struct never depends on itself (most updates hold one)
        if self._by_client is None:
            self._by_client = {}
            for item in sorted(self._items, key=lambda i: (i.client, i.clock)):
                starts, found = self._by_client.setdefault(item.client, ([], []))
                starts.append(item.clock)
                found.append(item)
        entry = self._by_client.get(id_[0])
        if entry is None:
            return None
        starts, items = entry
        i = bisect_right(starts, id_[1]) - 1
        if i >= 0 and id_[1] < items[i].clock + items[i].length:
            return items[i]
        return None


def _value(item: Item | None) -> object:
    if item is None or item.kind not in (ANY, JSON_CONTENT):
        return NO_VALUE
    return item.value


def _epoch_value(value: object) -> Epoch | None:
    """An epoch written as a number (or as text that converts to one, see field_rules)."""
    fix = conform(Kind.NUMBER, value)
    if value is None or (fix is not None and fix.value is None):
        return None
    return float(fix.value if fix is not None else value)  # type: ignore[arg-type]
