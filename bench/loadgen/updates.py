"""Prebuilt, valid Yjs updates that carry their send time.

A writer's updates are made ahead of time from one client Doc: each sets the writer's own
text field `spec.bench_<tag>` (an extra field, which the document shape keeps) to a
marker `BENCH<tag:4><ns:19>`. Writers never share a key: a concurrent write that loses
on the same key is relayed as a deleted item, without its content (and its marker).
Every update is new to the server and applies in order. At send time only the 19 digits
are overwritten with `time.monotonic_ns()` (same length, so the update stays valid);
whoever receives it finds the marker and knows when it was sent. CLOCK_MONOTONIC is
system-wide, so this holds across processes.
"""

from __future__ import annotations

import time

from pycrdt import Doc, Map, Text

MARKER = b"BENCH"
TAG_DIGITS = 4
NS_DIGITS = 19
STAMP_BYTES = len(MARKER) + TAG_DIGITS + NS_DIGITS
PLACEHOLDER = b"0" * NS_DIGITS


class UpdateStream:
    """`count` updates of one writer (`tag` identifies it to receivers)."""

    def __init__(self, tag: int, count: int, client_id: int | None = None) -> None:
        self.tag = tag
        doc = Doc(client_id=client_id if client_id is not None else 1_000_000 + tag)
        spec = doc.get("spec", type=Map)
        captured: list[bytes] = []
        subscription = doc.observe(lambda event: captured.append(event.update))
        value = f"{MARKER.decode()}{tag:0{TAG_DIGITS}d}{PLACEHOLDER.decode()}"
        key = f"bench_{tag:0{TAG_DIGITS}d}"
        for _ in range(count):
            spec[key] = value
        doc.unobserve(subscription)
        self._updates = captured
        # Where the digits sit in each update (the first update also creates the root).
        head = MARKER + f"{tag:0{TAG_DIGITS}d}".encode()
        self._offsets = [u.index(head) + len(head) for u in captured]

    def __len__(self) -> int:
        return len(self._updates)

    def stamped(self, index: int, now_ns: int | None = None) -> bytes:
        """Update `index` with the send time written in."""
        update, at = self._updates[index], self._offsets[index]
        digits = b"%019d" % (now_ns if now_ns is not None else time.monotonic_ns())
        return update[:at] + digits + update[at + NS_DIGITS :]


def stamps(update: bytes) -> list[tuple[int, int]]:
    """Every (tag, send ns) marker in an update (a server may merge several into one)."""
    found = []
    at = update.find(MARKER)
    while at >= 0:
        field = update[at + len(MARKER) : at + STAMP_BYTES]
        if len(field) == TAG_DIGITS + NS_DIGITS and field.isdigit():
            found.append((int(field[:TAG_DIGITS]), int(field[TAG_DIGITS:])))
        at = update.find(MARKER, at + STAMP_BYTES)
    return found


def big_document_updates(target_bytes: int, chunk_bytes: int = 400_000) -> list[bytes]:
    """A document of about `target_bytes`, as updates of about `chunk_bytes` each.

    Shots with long prompts (valid under the document shape), written one chunk per
    transaction so no single message exceeds a server's message limit.
    """
    doc = Doc(client_id=999_999)
    shots = doc.get("shots", type=Map)
    captured: list[bytes] = []
    subscription = doc.observe(lambda event: captured.append(event.update))
    prompt = "a slow dolly across the rain-soaked street at dusk, " * 40  # ~2 KB
    per_shot = len(prompt) + 60
    shots_per_chunk = max(1, chunk_bytes // per_shot)
    total = max(1, target_bytes // per_shot)
    for start in range(0, total, shots_per_chunk):
        with doc.transaction():
            for i in range(start, min(total, start + shots_per_chunk)):
                shots[f"S{i:06d}"] = Map(
                    {"title": f"shot {i}", "order": float(i), "prompt": Text(prompt)}
                )
    doc.unobserve(subscription)
    return captured
