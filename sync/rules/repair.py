"""Repairing well-formed updates that break the document rules (DESIGN.md section 2).

A CRDT client cannot un-apply its own edit, so the server accepts every well-formed
update and then, at once, writes the fix with a server origin, which reaches every
replica like any other edit. Each fix is a deterministic function of the merged state
(and of the values ever written, for lattices), so whatever order concurrent updates
arrive in, every replica ends on the same repaired document. The rules come from
`blackboard.schemas.document`:

- `server_only`: a client value in the `budget` root or in a server field (task leases)
  is replaced by the server's own last value, or removed if it never wrote one;
- `wrong_type`: a known field holding the wrong type is converted when that loses
  nothing (`"12"` -> `12`), else removed;
- `plain_entry`: a plain JSON object where an entry's nested Map belongs becomes a Map
  with the same fields;
- `bad_id`: an entry whose id breaks `ID_PATTERN` is removed (its content stays in the
  correction);
- `lattice`: a status below its lattice maximum gets the maximum back
  (`blackboard.sync.rules.lattice`);
- `non_finite`: NaN or ±Infinity anywhere in a value (a known field or not, however
  deep): a number field holding one is removed, a value holding one deeper (a Map, an
  Array, a plain object) is rewritten with null in its place. Found only where an
  update that may carry one (`yjs_structs.may_hold_non_finite`) touched.

Which entries to check comes from the type-level events of each root (they carry the
real transaction origin, so the server's own writes are never "repaired").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, MapEvent, Subscription, TransactionEvent

from blackboard.schemas.document import ROOTS, ROOTS_BY_NAME, Root, is_valid_id
from blackboard.schemas.views import finite_json, holds_non_finite
from blackboard.sync.room.connection import Connection
from blackboard.sync.room.origin import SERVER_ACTOR, Origin, Source
from blackboard.sync.rules.field_rules import conform, json_value
from blackboard.sync.rules.lattice import FieldWrite, LatticeTracker
from blackboard.sync.rules.shape import to_shared
from blackboard.sync.wire import close_codes
from blackboard.sync.wire.yjs_structs import may_hold_non_finite

log = logging.getLogger(__name__)

SERVER_ONLY = "server_only"
WRONG_TYPE = "wrong_type"
PLAIN_ENTRY = "plain_entry"
BAD_ID = "bad_id"
LATTICE = "lattice"
NON_FINITE = "non_finite"

Path = tuple[str, ...]  # (root, key) or (root, entry, field)
_MISSING: Any = object()
_MAX_UNSETTLED = 16  # client transactions waiting for their review (normally one)


@dataclass(frozen=True)
class Correction:
    """One repair: the value at `path` went from `before` to `after` (None: removed)."""

    path: Path
    rule: str
    before: Any
    after: Any
    write: bool = True  # False when a repair of the enclosing entry writes it
    record: bool = True  # False for a rewrite of the same value (see lattice.Target)

    @property
    def path_text(self) -> str:
        """`shots/S1/duration_s` (JSON Pointer escaping, so a bad id with `/` reads back)."""
        return "/".join(p.replace("~", "~0").replace("/", "~1") for p in self.path)


@dataclass(frozen=True)
class RepairPolicy:
    """A client whose edits keep needing repairs (say, fighting the server in a loop) is
    closed once it passes `max_repaired_updates` within `window_s`. A path that checks of
    other instances' updates keep repairing (instances that disagree would fight without
    end) is left alone past the same bound, with an error logged."""

    max_repaired_updates: int = 100
    window_s: float = 10.0
    # Another instance's update is checked here only after a delay: the instance that
    # accepted it repaired it at once, and its repair is on the way. A break that only
    # the two updates together make is repaired first by the instance that accepted the
    # write the entry shows (`owner_delay_s`); the others wait longer, and find it done.
    owner_delay_s: float = 0.05
    peer_delay_s: float = 0.5


def write_corrections(corrections: list[Correction], doc: Doc) -> None:
    """Apply repairs (inside a server transaction); a path that is gone is skipped."""
    for correction in corrections:
        if not correction.write:
            continue
        *parents, last = correction.path
        container: Any = doc.get(parents[0], type=Map)
        for key in parents[1:]:
            container = container.get(key)
            if not isinstance(container, Map):
                break
        else:
            if correction.after is not None:
                container[last] = to_shared(correction.after)
            elif last in container:
                del container[last]


class DocumentRules:
    """The rules of one live document: what changed, what the server wrote, the lattice
    maxima; `review` lists the repairs an accepted client update calls for."""

    def __init__(
        self,
        doc: Doc,
        policy: RepairPolicy | None = None,
        lattice: LatticeTracker | None = None,
    ) -> None:
        """`lattice`: `LatticeTracker.of_document(doc)`, if already built (off the loop)."""
        self._doc = doc
        self._policy = policy or RepairPolicy()
        self._roots = {root.name: doc.get(root.name, type=Map) for root in ROOTS}
        # Values only the server writes, as it last wrote them: (budget, key) or
        # (tasks, entry, lease field).
        self._truth: dict[Path, Any] = {}
        self._touched: dict[Path, None] = {}  # an ordered set
        self._lattice = lattice or LatticeTracker.of_document(doc)
        self._origin: Any = None  # the running transaction's origin (type-level events)
        self._reviewing = False
        self._reads: dict[Path, Any] = {}  # values read during one review
        self._lattice_changed = False  # by the running transaction
        self._non_finite = False  # whether the reviewed update may carry NaN/Infinity
        self._unsettled: deque[tuple[Any, list[FieldWrite]]] = deque()
        # Paths and lattice entries peer updates touched -> loop time to check them.
        self._deferred_paths: dict[Path, float] = {}
        self._deferred_entries: dict[tuple[str, str], float] = {}
        self._next_due: float | None = None  # the earliest of both (kept, not searched)
        # Entries the loaded document shows below their maximum are checked like a
        # peer's update (a live instance may be repairing them already).
        if self._lattice.dirty:
            self._defer([], list(self._lattice.dirty))
            self._lattice.dirty.clear()
        self._repaired: weakref.WeakKeyDictionary[Connection, deque[float]] = (
            weakref.WeakKeyDictionary()
        )
        self._peer_repaired: dict[Path, deque[float]] = {}  # by deferred checks
        self._load()
        self._subscriptions: list[tuple[Map, Subscription]] = [
            (shared, shared.observe_deep(self._events_of(ROOTS_BY_NAME[name])))
            for name, shared in self._roots.items()
        ]
        self._doc_subscription = doc.observe(self._on_transaction)

    def close(self) -> None:
        for shared, subscription in self._subscriptions:
            shared.unobserve(subscription)
        self._doc.unobserve(self._doc_subscription)

    # --- what the document holds now -----------------------------------------------

    def _load(self) -> None:
        for root in ROOTS:
            if not (root.server_only or root.server_fields):
                continue
            content = self._roots[root.name].to_py() or {}  # one read for the whole root
            for key, value in content.items():
                if root.server_only:
                    self._truth[(root.name, key)] = json_value(value)
                elif isinstance(value, dict):
                    for name in root.server_fields & value.keys():
                        self._truth[(root.name, key, name)] = json_value(value[name])

    # --- observers (they must never raise: a raise would surface in the transaction) --

    def _events_of(self, root: Root) -> Callable[[list[Any], Any], None]:
        def on_events(events: list[Any], txn: Any) -> None:
            try:
                self._origin = origin = txn.origin
                source = origin.source if isinstance(origin, Origin) else None
                # The server's writes, here or on another instance, are the truth of
                # what only it writes; another instance's client writes are not.
                trusted = source is Source.SERVER or (
                    source is Source.PEER and origin.actor == SERVER_ACTOR
                )
                for event in events:
                    self._take_event(root, event, source, trusted=trusted)
            except Exception:
                log.exception("repair: reading the events of %s failed", root.name)

        return on_events

    def _take_event(self, root: Root, event: Any, source: Source | None, *, trusted: bool) -> None:
        # A path is (root, key) or (root, entry, field); deeper changes count for the
        # field (or root key) they happened in.
        depth = 2 if root.keyed_by_id else 1
        inside = [str(p) for p in event.path]
        if len(inside) >= depth:
            paths: list[Path] = [(root.name, *inside[:depth])]
        else:
            keys = event.keys if isinstance(event, MapEvent) else {}
            paths = [(root.name, *inside, key) for key in keys]
            # An entry or a field of one changed. (Even with no status among the keys, a
            # status write may have lost a race there: it shows in no event.)
            self._lattice_changed |= root.lattice is not None
        for path in paths:
            if trusted:
                self._learn_truth(root, path)
            if source is not Source.SERVER:
                self._touched[path] = None

    def _learn_truth(self, root: Root, path: Path) -> None:
        """The server (here or on another instance) wrote `path`: the true value."""
        if root.server_only:
            self._remember(path[:2], self._value_at(path[:2]))
        elif root.server_fields and len(path) == 3 and path[2] in root.server_fields:
            self._remember(path, self._value_at(path))
        elif root.server_fields and len(path) == 2:  # a whole entry written
            for name in root.server_fields:
                self._remember((*path, name), self._value_at((*path, name)))

    def _remember(self, path: Path, value: Any) -> None:
        if value is _MISSING:
            self._truth.pop(path, None)
        else:
            self._truth[path] = json_value(value)

    def _value_at(self, path: Path) -> Any:
        """The value at `path` (`_MISSING` if none); read once per review."""
        value = self._reads.get(path, _MISSING)
        if value is _MISSING:
            parent = self._roots[path[0]] if len(path) == 2 else self._value_at(path[:-1])
            value = _get(parent, path[-1])
            if self._reviewing:
                self._reads[path] = value
        return value

    def _on_transaction(self, event: TransactionEvent) -> None:
        try:
            origin, self._origin = self._origin, None
            if origin is not None and hash(origin) != event.transaction.origin():
                origin = None  # no type-level event ran for this transaction
            # Reading the structs is only needed when a lattice root changed.
            changed, self._lattice_changed = self._lattice_changed, False
            fields = self._lattice.index(event.update) if changed else []
            source = origin.source if isinstance(origin, Origin) else None
            if source in (Source.CLIENT, Source.PEER):
                # Settled by `review`, with the update as sent (it keeps lost values).
                self._unsettled.append((origin, fields))
                while len(self._unsettled) > _MAX_UNSETTLED:
                    self._settle(*self._unsettled.popleft(), None)
            else:
                self._lattice.settle(fields, None, server=source is Source.SERVER, here=True)
        except Exception:
            log.exception("repair: reading a transaction failed")

    # --- review --------------------------------------------------------------------

    def review(self, update: bytes, origin: Origin) -> list[Correction]:
        """The repairs the update `origin` just applied calls for (possibly none).

        An update from another instance is not checked now but later (`check_deferred`,
        see `RepairPolicy`). Closes the sender if its edits have needed repairs too
        often lately. Never raises: a failure here only costs the repairs (logged).
        """
        try:
            while self._unsettled:
                owner, fields = self._unsettled.popleft()
                self._settle(owner, fields, update if owner is origin else None)
            touched, self._touched = list(self._touched), {}
            entries = list(self._lattice.dirty)
            self._lattice.dirty.clear()
            if origin.source is Source.PEER:
                self._defer(touched, entries)
                return []
            self._non_finite = may_hold_non_finite(update)
            try:
                corrections = self._check(touched, entries, peer=False)
            finally:
                self._non_finite = False
        except Exception:
            log.exception("repair: reviewing an update failed")
            return []
        if corrections and origin.connection is not None:
            self._count_repair(origin.connection)
        return corrections

    def take_record(self) -> bytes:
        """The status epochs to store with the log row being written (`sync.rules.lattice`)."""
        return self._lattice.take_record()

    def next_deferred(self) -> float | None:
        """The loop time of the next deferred check, if any."""
        return self._next_due

    def check_deferred(self) -> list[Correction]:
        """The repairs still needed where peer updates touched, for checks now due."""
        now = asyncio.get_running_loop().time()
        paths = _take_due(self._deferred_paths, now)
        entries = _take_due(self._deferred_entries, now)
        waiting = [*self._deferred_paths.values(), *self._deferred_entries.values()]
        self._next_due = min(waiting, default=None)
        try:
            corrections = self._check(paths, entries, peer=True)
        except Exception:
            log.exception("repair: a deferred check failed")
            return []
        for path in [p for p, times in self._peer_repaired.items() if not self._recent(times)]:
            del self._peer_repaired[path]
        allowed = []
        for correction in corrections:
            times = self._peer_repaired.setdefault(correction.path, deque())
            if self._over_limit(times):
                log.error(
                    "repair: %s repaired over %d times within %g s after other instances'"
                    " updates; left alone (do the instances disagree?)",
                    correction.path_text,
                    self._policy.max_repaired_updates,
                    self._policy.window_s,
                )
            else:
                allowed.append(correction)
        return allowed

    def _settle(self, origin: Any, fields: list[FieldWrite], sent: bytes | None) -> None:
        here = isinstance(origin, Origin) and origin.source is Source.CLIENT
        self._lattice.settle(fields, sent, server=False, here=here)

    def _defer(self, touched: list[Path], entries: list[tuple[str, str]]) -> None:
        now = asyncio.get_running_loop().time()
        for path in touched:
            self._check_by(self._deferred_paths, path, now + self._policy.peer_delay_s)
        for entry in entries:
            target = self._lattice.target(*entry)
            owned = target is not None and target.owned
            delay = self._policy.owner_delay_s if owned else self._policy.peer_delay_s
            self._check_by(self._deferred_entries, entry, now + delay)

    def _check_by(self, deferred: dict[Any, float], key: Any, due: float) -> None:
        """Check `key` no later than `due` (an earlier time already set stays)."""
        due = deferred[key] = min(deferred.get(key, due), due)
        self._next_due = due if self._next_due is None else min(self._next_due, due)

    def _check(
        self, touched: list[Path], entries: list[tuple[str, str]], *, peer: bool
    ) -> list[Correction]:
        fixes: dict[Path, Correction] = {}
        lattice_entries = dict.fromkeys(entries)
        checked = [
            path for path in touched if self._non_finite or _has_rule(ROOTS_BY_NAME[path[0]], path)
        ]
        if not checked and not lattice_entries:
            return []  # e.g. extra fields, which no rule covers: nothing to read
        with self._doc.transaction(), self._reading():  # one transaction for every read
            for path in checked:
                root = ROOTS_BY_NAME[path[0]]
                if len(path) == 2 and root.keyed_by_id:
                    self._check_entry(root, path[1], fixes, peer=peer)
                else:
                    self._check_field(root, path, fixes, peer=peer)
                if root.lattice and (len(path) == 2 or path[2] in root.lattice.fields):
                    lattice_entries[(root.name, path[1])] = None
            for root_name, key in lattice_entries:
                self._check_lattice(ROOTS_BY_NAME[root_name], key, fixes)
        return list(fixes.values())

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._reviewing = True
        try:
            yield
        finally:
            self._reviewing = False
            self._reads.clear()

    def _recent(self, times: deque[float]) -> deque[float]:
        """`times` without those before the window."""
        start = asyncio.get_running_loop().time() - self._policy.window_s
        while times and times[0] < start:
            times.popleft()
        return times

    def _over_limit(self, times: deque[float]) -> bool:
        """Count one more repair in `times`; whether that passes the bound."""
        times.append(asyncio.get_running_loop().time())
        return len(self._recent(times)) > self._policy.max_repaired_updates

    def _count_repair(self, connection: Connection) -> None:
        if self._over_limit(self._repaired.setdefault(connection, deque())):
            connection.close(
                close_codes.RATE_LIMITED,
                f"more than {self._policy.max_repaired_updates} edits needed repairs"
                f" within {self._policy.window_s:g} s",
            )

    # --- the rules -----------------------------------------------------------------

    def _check_entry(
        self, root: Root, key: str, fixes: dict[Path, Correction], *, peer: bool
    ) -> None:
        path = (root.name, key)
        value = self._value_at(path)
        if value is _MISSING:
            return
        if not is_valid_id(key):
            fixes[path] = Correction(path, BAD_ID, json_value(value), None)
        elif isinstance(value, dict):
            self._convert_entry(root, path, value, fixes, peer=peer)
        elif not isinstance(value, Map):
            fixes[path] = Correction(path, WRONG_TYPE, json_value(value), None)
        else:
            for name in sorted(set(value.keys()) | root.server_fields):
                self._check_field(root, (*path, name), fixes, peer=peer)

    def _convert_entry(
        self,
        root: Root,
        path: Path,
        value: dict[str, Any],
        fixes: dict[Path, Correction],
        *,
        peer: bool,
    ) -> None:
        """A plain object becomes a Map with its fields (themselves repaired)."""
        fields = dict(value)
        field_fixes = []
        for name in sorted(set(fields) | root.server_fields):
            fix = self._field_fix(root, (*path, name), fields.get(name, _MISSING), peer=peer)
            if fix is None:
                continue
            field_fixes.append(fix)
            if fix.after is None:
                fields.pop(name, None)
            else:
                fields[name] = fix.after
        fixes[path] = Correction(path, PLAIN_ENTRY, json_value(value), json_value(fields))
        for fix in field_fixes:  # recorded; the entry's new Map already holds them
            fixes[fix.path] = Correction(fix.path, fix.rule, fix.before, fix.after, write=False)

    def _check_field(
        self, root: Root, path: Path, fixes: dict[Path, Correction], *, peer: bool
    ) -> None:
        if len(path) == 3 and not isinstance(self._value_at(path[:2]), Map):
            return  # the entry itself is checked (or gone)
        fix = self._field_fix(root, path, self._value_at(path), peer=peer)
        if fix is not None:
            fixes[path] = fix

    def _field_fix(self, root: Root, path: Path, value: Any, *, peer: bool) -> Correction | None:
        name = path[-1]
        if root.server_only or name in root.server_fields:
            if peer:
                return None  # another instance's value: it checked its own clients
            truth = self._truth.get(path, _MISSING)
            if truth is _MISSING and value is _MISSING:
                return None
            shown = None if value is _MISSING else json_value(value)
            if truth is not _MISSING and value is not _MISSING and shown == truth:
                return None
            return Correction(path, SERVER_ONLY, shown, None if truth is _MISSING else truth)
        if value is _MISSING:
            return None
        kind = root.fields.get(name)
        shown, rule = value, WRONG_TYPE
        if self._non_finite:
            plain = value.to_py() if isinstance(value, Map | Array) else value
            if holds_non_finite(plain):
                shown, rule = finite_json(plain), NON_FINITE
        fix = None if kind is None else conform(kind, shown)
        if fix is None and rule is WRONG_TYPE:
            return None
        after = shown if fix is None else fix.value
        return Correction(path, rule, json_value(value), json_value(after))

    def _check_lattice(self, root: Root, key: str, fixes: dict[Path, Correction]) -> None:
        lattice = root.lattice
        assert lattice is not None
        target = self._lattice.target(root.name, key)
        if target is None or not is_valid_id(key):
            return
        entry = self._value_at((root.name, key))
        if not isinstance(entry, Map):
            return
        status = _present(self._value_at((root.name, key, lattice.field)))
        rewrite = target.status is not None and (status != target.status or target.stale)
        if target.epoch is not None and lattice.epoch_field:
            shown = _present(self._value_at((root.name, key, lattice.epoch_field)))
            wrong = _epoch(shown) != target.epoch or (shown is not None and not _is_number(shown))
            # Other instances count a status for the epoch written with it, else for that
            # of the status it overwrote: a status written over one of another epoch (or
            # over none) takes the epoch along, or they would count it for another one.
            if wrong or (rewrite and target.stale):
                path = (root.name, key, lattice.epoch_field)
                fixes[path] = Correction(
                    path, LATTICE, json_value(shown), target.epoch, record=wrong
                )
        if rewrite:
            path = (root.name, key, lattice.field)
            changed = status != target.status
            fixes[path] = Correction(
                path, LATTICE, json_value(status), target.status, record=changed
            )


def _has_rule(root: Root, path: Path) -> bool:
    """Whether a change at `path` can break a rule: a whole entry, or a field with a
    kind or written by the server alone (unknown extra fields are kept as they are)."""
    if len(path) == 2 and root.keyed_by_id:
        return True
    name = path[-1]
    return root.server_only or name in root.fields or name in root.server_fields


def _take_due(deferred: dict[Any, float], now: float) -> list[Any]:
    due = [key for key, at in deferred.items() if at <= now]
    for key in due:
        del deferred[key]
    return due


def _get(container: Any, key: str) -> Any:
    """`container[key]` if `container` is a Map holding `key` (one read, not two)."""
    if not isinstance(container, Map):
        return _MISSING
    try:
        return container[key]
    except KeyError:
        return _MISSING


def _present(value: Any) -> Any:
    return None if value is _MISSING else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _epoch(value: Any) -> float:
    return float(value) if _is_number(value) else 0.0
