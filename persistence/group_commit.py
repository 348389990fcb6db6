"""Group commit: items wait in one queue while one batch commits in one writer task.

The next batch takes what arrived meanwhile (natural batching): a lone item commits at
once and a burst costs one commit per batch. Used by the update log, the budget ledger
and the correction recorder, each with its own `commit` and its own bound on the queue.

Items nobody waits for (an update no client asked an ack for) may wait longer between
batches than those someone awaits: fewer commits, and no one sees the delay.

A batch whose `commit` raises goes back to the front of the queue and is retried with
backoff (a `commit` that must never retry settles its items itself and returns). The
queue keeps its order through retries, drops and discards, so "everything queued so
far" is everything older than a ticket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

from blackboard.persistence.tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF_S = 0.05


class GroupCommitter(Generic[T]):
    def __init__(
        self,
        name: str,
        commit: Callable[[list[T]], Awaitable[object]],
        *,
        max_batch: int,
        retry_max_s: float = 2.0,
        linger_s: float = 0.0,
        min_interval_s: float = 0.0,
        busy_batch: int = 0,
        with_next: Callable[[T], bool] | None = None,
        awaited: Callable[[T], bool] | None = None,
        unawaited_interval_s: float = 0.0,
    ) -> None:
        """`commit` stores one batch (in queue order) or raises to have it retried.

        `linger_s`: before a batch, wait that long at most for as many items as the
        last batch plus what queued behind it (see `_gather`). `min_interval_s`: a batch
        starts at most that often, so a steady stream of single items commits several
        per round trip (a commit's fsync costs the same for one row as for ten), while an
        item after a quiet spell commits at once. `busy_batch`: with at least that many
        items waiting, a batch starts without waiting for the interval (a busy queue
        shares its commit already; the wait would only delay its acks). `with_next(item)`:
        the item is never cut from the one queued after it, even past `max_batch`.
        `awaited(item)`: whether someone waits for the item's commit (None: for every
        item). While no awaited item is queued (nor one `hurry` or `flush` covers), batches
        start at most every `unawaited_interval_s` instead, and only awaited items count
        for `busy_batch`.
        """
        self.name = name
        self.max_batch = max_batch
        self.retry_max_s = retry_max_s
        self.linger_s = linger_s
        self.min_interval_s = min_interval_s
        self.busy_batch = busy_batch
        self._last_start = -math.inf  # loop time the last batch was taken
        self._commit = commit
        self._with_next = with_next
        self._awaited = awaited
        self.unawaited_interval_s = unawaited_interval_s
        self._issued = 0  # the last ticket given out
        self._hurried = 0  # someone waits for the items up to this ticket (`hurry`)
        self._queue: deque[tuple[int, T]] = deque()
        self._awaited_queued = 0  # items in `_queue` someone waits for
        self._in_flight: list[tuple[int, T]] = []  # older than everything queued
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever items leave
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._abandoned = False  # past stop's grace: the writer ends at its next step

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def waiting(self) -> int:
        """Items queued and not in the batch being committed."""
        return len(self._queue)

    def __len__(self) -> int:
        """Items not committed yet, the batch being committed included."""
        return len(self._in_flight) + len(self._queue)

    def items(self) -> Iterator[T]:
        """The items not committed yet, oldest first."""
        for _, item in itertools.chain(self._in_flight, self._queue):
            yield item

    def put(self, item: T) -> None:
        self._issued += 1
        self._queue.append((self._issued, item))
        if self._is_awaited(item):
            self._awaited_queued += 1
            self._wakeup.set()
        elif len(self._queue) == 1:
            # An unawaited item wakes the writer only from an empty queue: one waiting
            # out the longer interval is not woken for each item that joins the batch.
            self._wakeup.set()

    def drop_oldest(self, count: int) -> list[T]:
        """Remove the `count` oldest items waiting (never the batch being committed)."""
        dropped = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        self._awaited_queued -= self._awaited_in(dropped)
        self._progress.set()
        return [item for _, item in dropped]

    def discard(self, matches: Callable[[T], bool]) -> list[T]:
        """Remove every matching item, from the batch being committed too (a failed
        commit does not put those back)."""
        removed = [item for item in self.items() if matches(item)]
        if removed:
            self._in_flight = [entry for entry in self._in_flight if not matches(entry[1])]
            self._queue = deque(entry for entry in self._queue if not matches(entry[1]))
            self._awaited_queued = self._awaited_in(self._queue)
            self._progress.set()
        return removed

    def hurry(self) -> None:
        """Someone now waits for every item queued so far: they are paced as awaited."""
        self._hurried = self._issued
        self._wakeup.set()  # a writer waiting out the longer interval takes the shorter

    async def flush(self) -> None:
        """Wait until every item queued so far has left the queue (committed or dropped)."""
        self.hurry()
        target = self._issued
        while self._oldest() <= target and not self._stopping:
            self._progress.clear()
            await self._progress.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace_s: float) -> list[T]:
        """Commit everything queued (waiting at most `grace_s`), then stop the writer;
        return what was not committed, oldest first."""
        self._stopping = True
        self._wakeup.set()
        self._progress.set()  # a `flush` waiting would wait forever
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            except TimeoutError:
                # Python 3.11's wait_for can swallow a cancel that lands as its inner
                # await completes (a commit's own timeout): the flag ends the writer anyway.
                self._abandoned = True
                await cancel_and_wait([task])
        return list(self.items())

    def _oldest(self) -> float:
        if self._in_flight:
            return self._in_flight[0][0]
        return self._queue[0][0] if self._queue else float("inf")

    def _take(self) -> list[tuple[int, T]]:
        count = min(len(self._queue), self.max_batch)
        if self._with_next is not None:
            # `max_batch` bounds a commit's size, not a pair that must commit together.
            while count < len(self._queue) and self._with_next(self._queue[count - 1][1]):
                count += 1
        taken = [self._queue.popleft() for _ in range(count)]
        self._awaited_queued -= self._awaited_in(taken)
        return taken

    def _is_awaited(self, item: T) -> bool:
        return self._awaited is None or self._awaited(item)

    def _awaited_in(self, entries: Iterable[tuple[int, T]]) -> int:
        return sum(1 for _, item in entries if self._is_awaited(item))

    async def _run(self) -> None:
        backoff, expected = FIRST_BACKOFF_S, 0
        while not self._abandoned:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.linger_s > 0:
                await self._gather(expected)
            await self._space_out()
            self._in_flight = self._take()
            try:
                await self._commit([item for _, item in self._in_flight])
            except Exception as exc:  # e.g. the database is down: keep the batch, retry
                log.warning("%s: a batch of %d failed: %s", self.name, len(self._in_flight), exc)
                self._queue.extendleft(reversed(self._in_flight))
                self._awaited_queued += self._awaited_in(self._in_flight)
                self._in_flight = []
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            backoff = FIRST_BACKOFF_S
            # Items in flight: a batch's callers usually send their next item once
            # answered, and the items queued meanwhile are waiting already.
            expected = min(self.max_batch, len(self._in_flight) + len(self._queue))
            self._in_flight = []
            self._progress.set()

    async def _space_out(self) -> None:
        """Wait until the interval has passed since the last batch was taken (the shorter
        one once an awaited item is queued), unless `busy_batch` awaited items wait."""
        loop = asyncio.get_running_loop()
        while not self._stopping and not 0 < self.busy_batch <= self._awaited_queued:
            wait = self._last_start + self._interval() - loop.time()
            if wait <= 0:
                break
            self._wakeup.clear()
            timer = loop.call_later(wait, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                timer.cancel()
        self._last_start = loop.time()

    def _interval(self) -> float:
        hurried = self._queue and self._queue[0][0] <= self._hurried
        if self._awaited_queued or hurried:
            return self.min_interval_s
        return max(self.min_interval_s, self.unawaited_interval_s)

    async def _gather(self, expected: int) -> None:
        """Wait a moment (at most `linger_s`) until `expected` items are queued.

        Without it, a hot queue's callers split into two groups whose batches
        alternate: each batch starts with the items that queued while the previous one
        committed, before that one's callers are back, so every item waits for two
        chains of round trips instead of one.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while len(self._queue) < expected and not self._stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return
