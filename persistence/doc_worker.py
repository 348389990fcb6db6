"""A child process for whole-document work: replaying a snapshot and its log into a Doc
and encoding the result (`replay.fold`), as y/hub does its compaction, or any other
top-level function of bytes (`run`: a room's load splits its snapshot there).

`apply_update` holds the GIL (DESIGN.md section 8): replaying a 20 MB snapshot and
1,000 log rows in the serving process stalls every room for 0.1-0.4 s, even from a
thread. Here the event loop only hands bytes over and awaits bytes back. One child,
started with the services and stopped with them; after a child dies or a job is
cancelled (a timeout, or shutdown) the next job gets a fresh one (the old one is told to
exit when it finishes, as it cannot be interrupted).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar, TypeVarTuple, Unpack

from blackboard.persistence.replay import Folded, Parts, fold, fold_file
from blackboard.persistence.scratch import scratch_file

log = logging.getLogger(__name__)

T = TypeVar("T")
Args = TypeVarTuple("Args")

STOP_TIMEOUT_S = 30.0
# Background work: on a busy machine the serving process gets the CPU first.
CHILD_NICENESS = 10
# A first update (a snapshot) bigger than this goes to the child through a file.
PIPE_BYTES = 64 * 1024


class DocWorker:
    def __init__(self) -> None:
        self._running = False
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        self._running = True
        self._pool = _started_pool()

    async def stop(self) -> None:
        self._running = False
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.wait_for(
                asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True), STOP_TIMEOUT_S
            )

    async def fold(self, updates: Parts) -> Folded:
        """`replay.fold(updates)` in the child; its CorruptDocument comes back as is.
        A folder: cancel it (a timeout) and the next job gets a fresh child. A big first
        update (a snapshot) and the result go through a file (`replay.fold_file`):
        pickling 20 MB both ways stalls the event loop for about 10 ms."""
        async with scratch_file("blackboard-fold-") as path:
            head = None
            if updates and len(updates[0][1]) > PIPE_BYTES:
                (head, first), updates = updates[0], updates[1:]
                await asyncio.to_thread(path.write_bytes, first)
            state_vector = await self.run(fold_file, str(path), head, updates)
            return await asyncio.to_thread(path.read_bytes), state_vector

    async def run(self, function: Callable[[Unpack[Args]], T], *args: *Args) -> T:
        """`function(*args)` in the child: a top-level function (pickled by name) of
        picklable arguments. What it raises comes back as is. Cancel it (a timeout) and
        the next job gets a fresh child."""
        if not self._running:
            raise RuntimeError("the document worker is not running")
        if self._pool is None:  # dropped after a death or a cancelled job
            # Launching the child blocks about 0.1 s: not on the serving loop.
            pool = await asyncio.to_thread(_started_pool)
            if self._pool is None and self._running:
                self._pool = pool
            else:  # another job restarted it meanwhile, or the worker stopped
                pool.shutdown(wait=False, cancel_futures=True)
        if self._pool is None:
            raise RuntimeError("the document worker is not running")
        pool = self._pool
        try:  # a dead child breaks the pool: `submit` itself may raise
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except (asyncio.CancelledError, BrokenProcessPool):
            if self._pool is pool:
                log.warning("document worker: a job was cancelled or its child died")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            raise


def _started_pool() -> ProcessPoolExecutor:
    """A pool whose child is starting now, not on its first job: launching a process
    blocks the caller (about 0.1 s, here rather than on a serving loop), and the
    child's imports take longer (about 0.5 s, in the child, while the caller goes on)."""
    # forkserver: the child does not inherit the server's sockets, threads or memory.
    pool = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_init_child,
        initargs=(CHILD_NICENESS, os.getpid()),
    )
    pool.submit(fold, [])  # a job of nothing: what matters is that it launches the child
    return pool


def _init_child(niceness: int, server_pid: int) -> None:
    """In the child: run at a lower priority, and exit once the serving process is gone.
    A server killed with SIGKILL cannot stop its pool: the child would wait for work
    forever, keeping the forkserver and the resource tracker alive with it (about 40 MB
    per server start). Linux's pidfd tells without polling or a reused pid."""
    os.nice(niceness)
    try:
        server = os.pidfd_open(server_pid)
    except ProcessLookupError:
        os._exit(0)
    watch = threading.Thread(target=_exit_with, args=(server,), name="exit-with-server")
    watch.daemon = True
    watch.start()


def _exit_with(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once the process has exited
    os._exit(0)
