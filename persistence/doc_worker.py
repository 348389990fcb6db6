"""A child process for whole-document work: replaying a snapshot and its log into a Doc
and encoding the result (`replay.fold`), as y/hub does its compaction.

`apply_update` holds the GIL (DESIGN.md section 8): on a 20 MB document, replaying on
the serving process stalls every room for about a second, even from a thread. Here the
event loop only hands bytes over and awaits bytes back. One child, started with the
services and stopped with them; a child that dies or overruns is replaced for the next
job (an overrunning one is told to exit when it finishes, as it cannot be interrupted).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from blackboard.persistence.replay import Folded, Parts, fold

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class DocWorker:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Start the child now (a first job of nothing), not on the first compaction."""
        self._pool = _new_pool()
        await asyncio.wait_for(self.fold([]), START_TIMEOUT_S)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.wait_for(
                asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True), STOP_TIMEOUT_S
            )

    async def fold(self, updates: Parts) -> Folded:
        """`replay.fold(updates)` in the child; its CorruptDocument comes back as is.
        A folder: cancel it (a timeout) and the child is replaced."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("the document worker is not running")
        try:  # a dead child breaks the pool: `submit` itself may raise
            return await asyncio.get_running_loop().run_in_executor(pool, fold, updates)
        except (asyncio.CancelledError, BrokenProcessPool):
            self._replace(pool)
            raise

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            log.warning("document worker overran or died: starting a fresh one")
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = _new_pool()


def _new_pool() -> ProcessPoolExecutor:
    # forkserver: the child does not inherit the server's sockets, threads or memory.
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
