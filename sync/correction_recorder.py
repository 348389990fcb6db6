"""Recording repairs (`Extension.on_repair`) in the `corrections` table.

A repair's rows are written once the update that broke the rule is committed (they
carry its seq), in batches by one writer task, off the hot path. If the database is
down they wait and are retried; past `max_pending` rows the oldest are dropped with a
warning (the repairs themselves are document updates, durable like any other).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from persistence.clock import utc_now
from persistence.corrections import CorrectionRecord, CorrectionStore
from sync.extensions import Extension
from sync.origin import Origin

if TYPE_CHECKING:
    from sync.repair import Correction
    from sync.room import Room

log = logging.getLogger(__name__)
BATCH_ROWS = 500
RETRY_MAX_S = 2.0


class CorrectionRecorder(Extension):
    def __init__(self, store: CorrectionStore, *, max_pending: int = 100_000) -> None:
        self.store = store
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: deque[CorrectionRecord] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="correction-recorder")

    async def stop(self, grace_s: float) -> None:
        """Write what is queued (waiting at most `grace_s`), then stop."""
        try:
            await asyncio.wait_for(self.flush(), grace_s)
        except TimeoutError:
            log.error("corrections: %d rows not written at shutdown", len(self._pending))
        if self._task is not None:
            self._task.cancel()

    async def flush(self) -> None:
        """Wait until every row queued so far is written."""
        await self._idle.wait()

    def on_repair(
        self,
        room: Room,
        corrections: list[Correction],
        committed: asyncio.Future[int] | None,
        origin: Origin,
    ) -> None:
        recorded = [c for c in corrections if c.record]
        if committed is None or not recorded:
            return
        project_id, actor = room.project_id, origin.actor

        def queue(future: asyncio.Future[int]) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # the update was not stored: neither is its repair
            now = utc_now()
            seq = future.result()
            for n, c in enumerate(recorded):
                row = CorrectionRecord(
                    project_id, seq, n, actor, c.path_text, c.rule, c.before, c.after, now
                )
                self._pending.append(row)
            if len(self._pending) > self.max_pending:
                excess = len(self._pending) - self.max_pending
                for _ in range(excess):
                    self._pending.popleft()
                self.dropped += excess
                log.warning("corrections: %d rows dropped, the database is behind", excess)
            self._idle.clear()
            self._wakeup.set()

        committed.add_done_callback(queue)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            count = min(len(self._pending), BATCH_ROWS)
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                await self.store.add(batch)
            except Exception as exc:  # the database failed: keep the rows and retry
                log.warning("corrections: writing %d rows failed: %s", len(batch), exc)
                self._pending.extendleft(reversed(batch))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            backoff = 0.05
