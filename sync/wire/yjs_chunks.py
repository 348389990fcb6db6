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

from blackboard.sync.wire.protocol import encode_varuint
from blackboard.sync.wire.yjs_structs import Id, StructSpan, struct_spans

EMPTY_DELETE_SET = b"\x00"


def split_update(update: bytes, max_bytes: int) -> list[bytes]:
    """`update` as updates of at most about `max_bytes` each (a single struct bigger than
    that is a chunk of its own); `[update]` if it is no bigger. ProtocolError if it does
    not read (see `yjs_structs`)."""
    if len(update) <= max_bytes:
        return [update]
    clients, delete_set = struct_spans(update)
    chunks = _Chunks(update, max_bytes)
    for client, span in _dependency_order(clients):
        chunks.add(client, span)
    return chunks.finish(update[delete_set:])


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


class _Chunks:
    """Chunks being cut: per client, one contiguous run of its structs' bytes."""

    def __init__(self, update: bytes, max_bytes: int) -> None:
        self._update = update
        self._max_bytes = max_bytes
        self._done: list[bytes] = []
        self._runs: dict[int, list[int]] = {}  # client -> [first clock, count, start, end]
        self._size = 0

    def add(self, client: int, span: StructSpan) -> None:
        size = span.end - span.start
        if self._runs and self._size + size > self._max_bytes:
            self._cut(EMPTY_DELETE_SET)
        run = self._runs.get(client)
        if run is None:
            self._runs[client] = [span.clock, 1, span.start, span.end]
            self._size += 16  # its header, at most
        else:  # the client's next struct: its bytes follow the run's
            run[1] += 1
            run[3] = span.end
        self._size += size

    def finish(self, delete_set: bytes) -> list[bytes]:
        self._cut(delete_set)
        return self._done

    def _cut(self, delete_set: bytes) -> None:
        parts = [encode_varuint(len(self._runs))]
        for client, (clock, count, start, end) in self._runs.items():
            parts += [encode_varuint(count), encode_varuint(client), encode_varuint(clock)]
            parts.append(self._update[start:end])
        parts.append(delete_set)
        self._done.append(b"".join(parts))
        self._runs, self._size = {}, 0
