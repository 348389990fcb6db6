"""Recording repairs (`Extension.on_repair`) in the `corrections` table.

A repair's rows are written once the update that broke the rule is committed (they
carry its seq), in batches by one writer task (`blackboard.persistence.group_commit`), off the hot
path. If the database is down they wait and are retried; past `max_pending` rows the
oldest are dropped with a warning (the repairs themselves are document updates, durable
like any other).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from blackboard.persistence.clock import utc_now
from blackboard.persistence.corrections import CorrectionRecord, CorrectionStore
from blackboard.persistence.group_commit import GroupCommitter
from blackboard.sync.room.extensions import Extension
from blackboard.sync.room.origin import Origin

if TYPE_CHECKING:
    from blackboard.sync.room.room import Room
    from blackboard.sync.rules.correction import Correction

log = logging.getLogger(__name__)
BATCH_ROWS = 500
RETRY_MAX_S = 2.0


class CorrectionRecorder(Extension):
    def __init__(self, store: CorrectionStore, *, max_pending: int = 100_000) -> None:
        self.store = store
        self.max_pending = max_pending
        self.dropped = 0
        self._committer: GroupCommitter[CorrectionRecord] = GroupCommitter(
            "corrections", store.add, max_batch=BATCH_ROWS, retry_max_s=RETRY_MAX_S
        )

    def start(self) -> None:
        self._committer.start()

    async def stop(self, grace_s: float) -> None:
        """Write what is queued (waiting at most `grace_s`), then stop."""
        left = await self._committer.stop(grace_s)
        if left:
            log.error("corrections: %d rows not written at shutdown", len(left))

    async def flush(self) -> None:
        """Wait until every row queued so far is written."""
        await self._committer.flush()

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
                self._committer.put(row)
            excess = self._committer.waiting - self.max_pending
            if excess > 0:
                self.dropped += len(self._committer.drop_oldest(excess))
                log.warning("corrections: %d rows dropped, the database is behind", excess)

        committed.add_done_callback(queue)
