"""Runs compactions in the background, one project at a time, each project at most once
in the queue. Rooms request one when their tail grows past the threshold."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from blackboard.persistence.compaction import DEFAULT_LEASE, CompactionResult, HeldCheck, compact
from blackboard.persistence.replay import Folder, fold_in_thread
from blackboard.persistence.store import Store
from blackboard.persistence.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class CompactionWorker:
    def __init__(
        self,
        store: Store,
        retention: timedelta,
        lease_ttl: timedelta = DEFAULT_LEASE,
        folder: Folder = fold_in_thread,  # the server's: its DocWorker's child process
        held: HeldCheck | None = None,  # see `compaction`: the server's, in that child
    ) -> None:
        self.store = store
        self.retention = retention
        self.lease_ttl = lease_ttl
        self.folder = folder
        self.held = held
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_done: list[Callable[[CompactionResult, float], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="compaction-worker")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])

    def request(self, project_id: str) -> None:
        if project_id not in self._queued:
            self._queued.add(project_id)
            self._queue.put_nowait(project_id)

    async def compact_now(self, project_id: str) -> CompactionResult:
        # One compaction per project at a time in this process; across processes the
        # compaction fence in the database lets one through and fences the others.
        lock = self._locks.setdefault(project_id, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            result = await compact(
                self.store,
                project_id,
                self.retention,
                lease_ttl=self.lease_ttl,
                folder=self.folder,
                held=self.held,
            )
            for hook in self.on_done:
                hook(result, time.perf_counter() - started)
        if not lock.locked():
            self._locks.pop(project_id, None)
        return result

    async def _run(self) -> None:
        while True:
            project_id = await self._queue.get()
            self._queued.discard(project_id)
            try:
                await self.compact_now(project_id)
            except Exception:
                log.exception(
                    "compaction of %s failed", project_id, extra={"project_id": project_id}
                )
