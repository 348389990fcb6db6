"""Rebuild a Doc from what a store holds: the snapshot, then each log row in order.

Applying to a Doc is linear; one giant `merge_updates` is not (DESIGN.md section 8).
"""

from __future__ import annotations

from pycrdt import Doc

from blackboard.persistence.records import StoredDocument
from blackboard.persistence.yrs_guard import YrsError, yrs_guard


class CorruptDocument(Exception):
    """A stored row would not apply: the load fails instead of serving a partial doc."""


def replay(stored: StoredDocument, doc: Doc | None = None) -> Doc:
    doc = doc if doc is not None else Doc()
    if stored.snapshot is not None:
        _apply(doc, stored.snapshot.state, f"snapshot at seq {stored.snapshot.upto_seq}")
    for entry in stored.tail:
        _apply(doc, entry.update, f"log row {entry.seq}")
    return doc


def _apply(doc: Doc, update: bytes, what: str) -> None:
    try:
        with yrs_guard:
            doc.apply_update(update)
    except YrsError as exc:
        raise CorruptDocument(f"{what} does not apply: {exc}") from exc
