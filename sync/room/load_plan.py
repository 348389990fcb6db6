"""What a room's load does with the whole stored document, off the event loop.

Every whole-document step holds the GIL for as long as the document is big (a 20 MB
document: applying it 60 ms, encoding it 150 ms, reading its lattice fields 60 ms), and
stalls every other room of the process even from a thread. So a big document's load
does them in the DocWorker's child (`plan_load`) and the event loop only applies the
chunks the plan lays out, yielding between them (`sync.room.rooms`).

The document's bytes go to the child and back through a file, not the pipe: pickling
20 MB holds the GIL for tens of ms on either side, where writing and reading a file
releases it. What comes back through the pipe (the plan) is small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pycrdt import Doc

from blackboard.persistence.records import StoredDocument
from blackboard.persistence.replay import Parts, file_parts, parts, replayed
from blackboard.persistence.scratch import scratch_file
from blackboard.sync.rules.lattice import Shown, shown_entries
from blackboard.sync.wire.protocol import ProtocolError
from blackboard.sync.wire.yjs_chunks import ChunkLayout, chunk_layout, in_chunks
from blackboard.sync.wire.yjs_structs import held_back

# A chunk applies to a Doc in about 0.2 ms and its lattice fields index in about 2 ms:
# the longest step of a load between two turns of the event loop.
CHUNK_BYTES = 64 * 1024
# A document of at most this many updates and CHUNK_BYTES is planned on the event loop:
# handing it to the child would cost more than the stall it saves.
SMALL_ROWS = 64


@dataclass(frozen=True)
class LoadPlan:
    layout: ChunkLayout | None  # None: the document's encoding applies whole
    shown: Shown  # the lattice entries' (status, epoch) it shows
    # Some stored update waits for one it needs: yrs keeps its structs aside, and the
    # document's encoding leaves them out, so the load applies the log rows as stored too.
    held_back: bool = False

    def chunks(self, state: bytes) -> Iterator[bytes]:
        """`state` (the document's encoding the plan was made from) as updates to apply
        in order to a fresh Doc, cut one at a time."""
        return in_chunks(state, self.layout)


# Somewhere `plan_load` runs (path, snapshot label, tail): the DocWorker's child in a
# server (`DocWorker.run`), a thread by default.
Planner = Callable[[str, str | None, Parts], Awaitable[LoadPlan]]


async def plan_in_thread(path: str, snapshot: str | None, tail: Parts) -> LoadPlan:
    """The planner of a process with no other rooms to protect (the tests)."""
    return await asyncio.to_thread(plan_load, path, snapshot, tail)


async def planned(stored: StoredDocument, planner: Planner) -> tuple[bytes, LoadPlan]:
    """The document's encoding and its plan. CorruptDocument if an update does not apply."""
    updates = parts(stored)
    encoded = stored.snapshot is not None and not stored.tail
    snapshot = stored.snapshot
    tail = updates[1:] if snapshot else updates  # a snapshot, an encoding, holds nothing back
    if len(updates) <= SMALL_ROWS and sum(len(update) for _, update in updates) <= CHUNK_BYTES:
        doc = replayed(updates)
        state = updates[0][1] if encoded else doc.get_update()
        return state, _plan(doc, state, CHUNK_BYTES, tail)
    async with scratch_file("blackboard-load-") as path:
        if snapshot is not None:  # else the child only writes the document's encoding
            await asyncio.to_thread(path.write_bytes, snapshot.state)
        plan = await planner(str(path), updates[0][0] if snapshot else None, tail)
        state = snapshot.state if encoded and snapshot else await asyncio.to_thread(path.read_bytes)
    return state, plan


def plan_load(
    path: str, snapshot: str | None, tail: Parts, max_bytes: int = CHUNK_BYTES
) -> LoadPlan:
    """In the child: replay the snapshot in `path` (labelled `snapshot`, if there is
    one) and `tail`, and lay the document out in chunks of about `max_bytes`. With a
    tail, the replayed document's encoding replaces the snapshot in `path`."""
    updates = file_parts(path, snapshot, tail)
    doc = replayed(updates)
    if tail or snapshot is None:
        state = doc.get_update()
        Path(path).write_bytes(state)
    else:
        state = updates[0][1]
    return _plan(doc, state, max_bytes, tail)


def _plan(doc: Doc, state: bytes, max_bytes: int, updates: Parts) -> LoadPlan:
    """An encoding the splitter does not read (`sync.wire.yjs_structs`) applies whole."""
    try:
        layout = chunk_layout(state, max_bytes)
    except ProtocolError:
        layout = None
    held = held_back(doc.get_state(), [update for _, update in updates])
    return LoadPlan(layout, shown_entries(doc), bool(held))
