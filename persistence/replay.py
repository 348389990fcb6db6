"""Rebuild a Doc from what a store holds: the snapshot, then each log row in order.

Applying to a Doc is linear; one giant `merge_updates` is not (DESIGN.md section 8).
`fold` does the same from plain bytes and returns plain bytes, so it can run in a child
process (`blackboard.persistence.doc_worker`), away from the serving event loop (a
room's load replays there too: `blackboard.sync.room.load_plan`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from pycrdt import Doc

from blackboard.persistence.records import StoredDocument
from blackboard.persistence.yrs_guard import YrsError, yrs_guard

# What is applied, in order: (what it is, for an error message; the update's bytes).
Parts = list[tuple[str, bytes]]
# The folded document: the whole state as one update, and its state vector.
Folded = tuple[bytes, bytes]
# Somewhere `fold` runs off the event loop: a thread, or a child process.
Folder = Callable[[Parts], Awaitable[Folded]]


class CorruptDocument(Exception):
    """A stored row would not apply: the load fails instead of serving a partial doc."""


def parts(stored: StoredDocument) -> Parts:
    snapshot = stored.snapshot
    head = [(f"snapshot at seq {snapshot.upto_seq}", snapshot.state)] if snapshot else []
    return head + [(f"log row {entry.seq}", entry.update) for entry in stored.tail]


def replay(stored: StoredDocument, doc: Doc | None = None) -> Doc:
    doc = doc if doc is not None else Doc()
    for what, update in parts(stored):
        apply(doc, update, what)
    return doc


def fold(updates: Parts) -> Folded:
    """Replay `updates` into a fresh Doc and encode it. Top-level and pure: a child
    process runs it on pickled bytes."""
    doc = Doc()
    for what, update in updates:
        apply(doc, update, what)
    return doc.get_update(), doc.get_state()


def fold_file(path: str, head: str | None, tail: Parts) -> bytes:
    """`fold` with the document's bytes in a file, for a child process: the update
    read from `path` (labelled `head`; None: none) goes before `tail`, and the folded
    document is written to `path`; returns its state vector. Pickling 20 MB through
    the pipe both ways instead stalls the parent's event loop about 10 ms."""
    file = Path(path)
    first = [(head, file.read_bytes())] if head is not None else []
    state, state_vector = fold(first + tail)
    file.write_bytes(state)
    return state_vector


async def fold_in_thread(updates: Parts) -> Folded:
    """The folder of a process with no event loop to protect (the CLI, the tests): a
    thread, which still lets the loop run between rows."""
    return await asyncio.to_thread(fold, updates)


def apply(doc: Doc, update: bytes, what: str) -> None:
    try:
        with yrs_guard:
            doc.apply_update(update)
    except YrsError as exc:
        raise CorruptDocument(f"{what} does not apply: {exc}") from exc
