"""A room's SyncStep2 replies by the asker's state vector, valid until the document changes."""

from __future__ import annotations

STEP2_CACHE_ENTRIES = 32
# Bytes the cached replies may hold together: 32 distinct state vectors of a 20 MB
# document would otherwise pin 640 MB.
STEP2_CACHE_BYTES = 64 * 1024 * 1024


class Step2Cache:
    """A join storm computes the full state once. Bounded in entries and bytes (full, it
    starts over); the room empties it on any change."""

    def __init__(self) -> None:
        self._replies: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._replies)

    @property
    def size(self) -> int:
        """The bytes of the cached replies."""
        return sum(map(len, self._replies.values()))

    def get(self, state_vector: bytes) -> bytes | None:
        return self._replies.get(state_vector)

    def put(self, state_vector: bytes, reply: bytes) -> None:
        if len(self._replies) >= STEP2_CACHE_ENTRIES or self.size + len(reply) > STEP2_CACHE_BYTES:
            self._replies.clear()
        if len(reply) <= STEP2_CACHE_BYTES:
            self._replies[state_vector] = reply

    def clear(self) -> None:
        self._replies.clear()
