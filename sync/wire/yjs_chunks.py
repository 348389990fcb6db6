"""Splitting a big Yjs v1 update into updates of bounded size that, applied in order to
a Doc, give the same document as the whole.

`Doc.apply_update` holds the GIL for the whole update: about 3 ms per MB, so a 20 MB
snapshot stalls every room of the process for 60 ms at once. Applied in chunks of a few
hundred KB, with the event loop running between them, no stall is longer than a chunk.

A chunk is a run of whole structs of each client (their bytes as they are, under a new
header) and an empty delete set; the last chunk carries the update's delete set. Each
struct goes into a chunk no earlier than the structs it needs (origin, right origin,
parent), so yrs integrates every chunk at once instead of keeping structs pending until
a later chunk brings what they need.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from blackboard.sync.wire.protocol import encode_varuint
from blackboard.sync.wire.yjs_structs import Id, StructSpan, struct_spans

EMPTY_DELETE_SET = b"\x00"

# A run of one client's structs in a chunk: (client, first clock, struct count, first
# byte, end byte) in the update.
Run = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class ChunkLayout:
    """Where the chunks of an update are: small, so the process that worked it out can
    hand it to the one holding the update's bytes, which cuts the chunks one at a time."""

    chunks: list[list[Run]]
    delete_set: int  # the offset of the update's delete set (the last chunk's)

    def __len__(self) -> int:
        return len(self.chunks)

    def cut(self, update: bytes, index: int) -> bytes:
        """Chunk `index` of `update` (the bytes this layout was worked out from)."""
        runs = self.chunks[index]
        parts = [encode_varuint(len(runs))]
        for client, clock, count, start, end in runs:
            parts += [encode_varuint(count), encode_varuint(client), encode_varuint(clock)]
            parts.append(update[start:end])
        last = index == len(self.chunks) - 1
        parts.append(update[self.delete_set :] if last else EMPTY_DELETE_SET)
        return b"".join(parts)


def chunk_layout(update: bytes, max_bytes: int) -> ChunkLayout | None:
    """Where to cut `update` into chunks of at most about `max_bytes` each (a single
    struct bigger than that is a chunk of its own); None if it is no bigger, as it then
    applies whole, unread. ProtocolError if it does not read."""
    if len(update) <= max_bytes:
        return None
    clients, delete_set, _ = struct_spans(update)
    chunks: list[list[Run]] = []
    runs: dict[int, list[int]] = {}  # client -> [first clock, count, start, end]
    size = 0
    for client, span in _dependency_order(clients):
        if runs and size + span.end - span.start > max_bytes:
            chunks.append(_runs(runs))
            runs, size = {}, 0
        run = runs.get(client)
        if run is None:
            runs[client] = [span.clock, 1, span.start, span.end]
            size += 16  # its header, at most
        else:  # the client's next struct: its bytes follow the run's
            run[1] += 1
            run[3] = span.end
        size += span.end - span.start
    chunks.append(_runs(runs))
    return ChunkLayout(chunks, delete_set)


def in_chunks(update: bytes, layout: ChunkLayout | None) -> Iterator[bytes]:
    """`update` as updates to apply in order, cut one at a time as `layout` (worked out
    from these bytes) says; None: whole."""
    if layout is None:
        yield update
        return
    for index in range(len(layout)):
        yield layout.cut(update, index)


def _runs(runs: dict[int, list[int]]) -> list[Run]:
    return [
        (client, clock, count, start, end) for client, (clock, count, start, end) in runs.items()
    ]


def _dependency_order(clients: dict[int, list[StructSpan]]) -> list[tuple[int, StructSpan]]:
    """Every struct, each client's in clock order, each after the structs it needs that
    the update holds. A struct that waits is parked on the client it waits for and woken
    once that client's structs reach the clock it needs."""
    clients = {client: spans for client, spans in clients.items() if spans}
    ends = {client: spans[-1].clock + spans[-1].length for client, spans in clients.items()}
    done = {client: spans[0].clock for client, spans in clients.items()}  # placed up to
    nexts = dict.fromkeys(clients, 0)
    waiting: dict[int, list[tuple[int, int]]] = {}  # client -> heap of (clock, waiter)
    ready = deque(clients)
    order: list[tuple[int, StructSpan]] = []

    def missing(needed: Id) -> Id | None:
        client, clock = needed
        # Structs the update does not hold are not waited for (yrs decides about them).
        if client not in ends or clock < done[client] or clock >= ends[client]:
            return None
        return needed

    def place(client: int) -> None:
        spans = clients[client]
        while nexts[client] < len(spans):
            span = spans[nexts[client]]
            blocker = next(filter(None, map(missing, span.needs)), None)
            if blocker is not None:
                heapq.heappush(waiting.setdefault(blocker[0], []), (blocker[1], client))
                return
            order.append((client, span))
            nexts[client] += 1
            done[client] = span.clock + span.length
            parked = waiting.get(client)
            while parked and parked[0][0] < done[client]:
                ready.append(heapq.heappop(parked)[1])

    total = sum(map(len, clients.values()))
    while len(order) < total:
        if not ready:
            # Structs that need each other (not from a consistent document): place one
            # anyway; yrs keeps what it cannot integrate pending, as it would the whole.
            client = next(c for c, spans in clients.items() if nexts[c] < len(spans))
            span = clients[client][nexts[client]]
            order.append((client, span))
            nexts[client] += 1
            done[client] = span.clock + span.length
            ready.append(client)
            continue
        place(ready.popleft())
    return order
