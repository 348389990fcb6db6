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

`DocumentRules` puts the parts together: `observation` (what changed, by whom),
`server_truth` (the values only the server writes), `rule_checks` (the rules above),
`deferred_checks` (when to check other instances' updates) and `repair_limit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pycrdt import Doc, TransactionEvent

from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.rules.correction import Correction, Entry, Path
from blackboard.sync.rules.deferred_checks import DeferredChecks
from blackboard.sync.rules.document_reader import DocumentReader
from blackboard.sync.rules.lattice import LatticeTracker
from blackboard.sync.rules.observation import ChangeObserver
from blackboard.sync.rules.repair_limit import RepairLimit, RepairPolicy
from blackboard.sync.rules.rule_checks import RuleChecks
from blackboard.sync.rules.server_truth import ServerTruth
from blackboard.sync.wire.yjs_structs import may_hold_non_finite

log = logging.getLogger(__name__)


class DocumentRules:
    """The rules of one live document: `review` lists the repairs an accepted client
    update calls for; other instances' updates are checked later (`check_deferred`)."""

    def __init__(
        self,
        doc: Doc,
        policy: RepairPolicy | None = None,
        lattice: LatticeTracker | None = None,
        *,
        observe_doc: bool = True,
    ) -> None:
        """`lattice`: `LatticeTracker.of_document(doc)`, if already built (off the loop).
        `observe_doc`: False if the owner observes `doc` already and hands every
        transaction event to `after_transaction` (one observer: one encoded update)."""
        policy = policy or RepairPolicy()
        self._lattice = lattice or LatticeTracker.of_document(doc)
        reader = DocumentReader(doc)
        truth = ServerTruth(reader)
        self._checks = RuleChecks(reader, truth, self._lattice)
        self._deferred = DeferredChecks(policy)
        self._limit = RepairLimit(policy)
        # Entries the loaded document shows below their maximum are checked like a
        # peer's update (a live instance may be repairing them already).
        if self._lattice.dirty:
            self._defer([], self._take_dirty())
        self._observer = ChangeObserver(doc, reader.roots, self._lattice, truth.learn)
        self.after_transaction: Callable[[TransactionEvent], None] = self._observer.on_transaction
        self._doc = doc
        self._subscription = doc.observe(self.after_transaction) if observe_doc else None

    @property
    def lattice(self) -> LatticeTracker:
        """The status lattices' maxima of this document."""
        return self._lattice

    def close(self) -> None:
        self._observer.close()
        if self._subscription is not None:
            self._doc.unobserve(self._subscription)

    def review(self, update: bytes, origin: Origin) -> list[Correction]:
        """The repairs the update `origin` just applied calls for (possibly none).

        An update from another instance is not checked now but later (`check_deferred`,
        see `RepairPolicy`). Closes the sender if its edits have needed repairs too
        often lately. Never raises: a failure here only costs the repairs (logged).
        """
        try:
            self._observer.settle(update, origin)
            touched = self._observer.take_touched()
            entries = self._take_dirty()
            if origin.source is Source.PEER:
                self._defer(touched, entries)
                return []
            corrections = self._checks.check(
                touched, entries, peer=False, non_finite=may_hold_non_finite(update)
            )
        except Exception:
            log.exception("repair: reviewing an update failed")
            return []
        if corrections and origin.connection is not None:
            self._limit.count(origin.connection)
        return corrections

    def take_record(self) -> bytes:
        """The status epochs to store with the log row being written (`sync.rules.lattice`)."""
        return self._lattice.take_record()

    def next_deferred(self) -> float | None:
        """The loop time of the next deferred check, if any."""
        return self._deferred.next_due

    def check_deferred(self) -> list[Correction]:
        """The repairs still needed where peer updates touched, for checks now due."""
        paths, entries = self._deferred.take_due()
        try:
            corrections = self._checks.check(paths, entries, peer=True, non_finite=False)
        except Exception:
            log.exception("repair: a deferred check failed")
            return []
        return self._limit.allowed(corrections)

    def _take_dirty(self) -> list[Entry]:
        """The lattice entries that may show less than their maximum since the last call."""
        dirty = self._lattice.dirty
        if not dirty:
            return []
        entries = list(dirty)
        dirty.clear()
        return entries

    def _defer(self, touched: list[Path], entries: list[Entry]) -> None:
        # The instance that accepted the write an entry shows repairs it first.
        owned = [(entry, self._owned(entry)) for entry in entries]
        self._deferred.defer(touched, owned)

    def _owned(self, entry: Entry) -> bool:
        target = self._lattice.target(*entry)
        return target is not None and target.owned
