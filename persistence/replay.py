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


def replayed(updates: Parts) -> Doc:
    """A fresh Doc with `updates` applied in order."""
    doc = Doc()
    for what, update in updates:
        apply(doc, update, what)
    return doc


def replay(stored: StoredDocument) -> Doc:
    return replayed(parts(stored))


def fold(updates: Parts) -> Folded:
    """Replay `updates` into a fresh Doc and encode it. Top-level and pure: a child
    process runs it on pickled bytes."""
    doc = replayed(updates)
    return doc.get_update(), doc.get_state()


def file_parts(path: str, head: str | None, tail: Parts) -> Parts:
    """`tail` after the update in the file at `path`, labelled `head` (None: there is
    none): what a child process replays when the document's bytes come through a file,
    as pickling 20 MB through the pipe both ways stalls the parent's loop about 10 ms."""
    return [(head, Path(path).read_bytes()), *tail] if head is not None else tail


def fold_file(path: str, head: str | None, tail: Parts) -> bytes:
    """`fold` of `file_parts(path, head, tail)`, for a child process: the folded document
    is written to `path`, and its state vector returned."""
    doc = replayed(file_parts(path, head, tail))
    Path(path).write_bytes(doc.get_update())
    return doc.get_state()


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
