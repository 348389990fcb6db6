"""Durable acks: a cumulative count of a connection's update-bearing messages on disk.

Messages are counted in the order received. One that changed nothing is done at once,
but the count only moves over a prefix of done messages, so an ack of N means the first
N messages are all durable.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class AckTracker:
    def __init__(self, send_ack: Callable[[int], None]) -> None:
        self._send_ack = send_ack
        self._pending: deque[asyncio.Future[int] | None] = deque()
        self.acked = 0

    def track(self, committed: asyncio.Future[int] | None) -> None:
        """Count one message; `committed` resolves when its change is durable."""
        self._pending.append(committed)
        if committed is None:
            self._advance()
        else:
            committed.add_done_callback(lambda _: self._advance())

    def _advance(self) -> None:
        moved = 0
        while self._pending:
            head = self._pending[0]
            if head is not None and not head.done():
                break
            if head is not None and (head.cancelled() or head.exception() is not None):
                return  # never acknowledge what did not commit
            self._pending.popleft()
            moved += 1
        if moved:
            self.acked += moved
            self._send_ack(self.acked)
