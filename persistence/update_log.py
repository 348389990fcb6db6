"""Group commit: every accepted update of every room goes through one appender.

Updates wait in memory while one batch commits; the next batch takes everything that
arrived meanwhile (natural batching), so a lone update commits at once and a burst costs
one transaction per batch (`blackboard.persistence.group_commit`). A future per update resolves with
its seq after COMMIT: that is when an update is acknowledged. If the database fails, the
batch stays queued and is retried with backoff; past `max_pending_bytes` new appends are
refused (LogFull) rather than dropped. A row queued with `commit_with_next` is never cut
from the row queued right after it: both commit in one transaction or neither does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from blackboard.persistence.errors import LogFull, ProjectNotFound
from blackboard.persistence.group_commit import GroupCommitter
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.store import Store

log = logging.getLogger(__name__)


# Told each committed row's seq and size, right after COMMIT (see `UpdateLog.append`).
OnCommit = Callable[[int, int], None]


@dataclass(slots=True)
class _Queued:
    row: PendingAppend
    committed: asyncio.Future[int] = field(repr=False)
    commit_with_next: bool = False
    on_commit: OnCommit | None = field(default=None, repr=False)
    awaited: bool = True

    @property
    def size(self) -> int:
        """The bytes this row holds while queued (what `max_pending_bytes` bounds)."""
        return len(self.row.update) + len(self.row.status_epochs)


# Batches start at most this often: a room's updates arriving one at a time then share
# a commit (and its fsync) instead of paying one each. Only acks wait for it, never the
# fan-out; an update after a quiet spell commits at once. A commit costs the embedded
# default about 0.4 ms of CPU (the fsync, the hand-offs to its thread): at 10 ms that is
# at most 4% of a core, and a durable ack waits at most 10 ms more (bench/RESULTS.md).
COMMIT_INTERVAL_S = 0.010
# ... unless this many updates wait already: their commit is shared widely enough, and a
# busy log's acks do not wait for the interval.
BUSY_BATCH = 32
# While no queued update is awaited (no client asked an ack for it, no request waits for
# its commit: a stock Yjs client's), batches start at most this often: a steady stream of
# them shares a commit per 50 ms instead of per 10 ms (bench/RESULTS.md, one busy room).
# Nobody waits for it; a server crash may lose up to 50 ms of them instead of 10, which
# their senders still hold and send again when they reconnect.
UNAWAITED_INTERVAL_S = 0.050


@dataclass
class BatchStats:
    """What the last commit looked like (read by metrics)."""

    rows: int = 0
    seconds: float = 0.0
    failures: int = 0


class UpdateLog:
    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 2000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        retry_max_s: float = 2.0,
        min_interval_s: float = COMMIT_INTERVAL_S,
        busy_batch: int = BUSY_BATCH,
        unawaited_interval_s: float = UNAWAITED_INTERVAL_S,
    ) -> None:
        self.store = store
        self.max_pending_bytes = max_pending_bytes
        self.stats = BatchStats()
        self.healthy = True
        self._pending_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop appends come from
        self._committer: GroupCommitter[_Queued] = GroupCommitter(
            "update log",
            self._commit,
            max_batch=max_batch,
            retry_max_s=retry_max_s,
            min_interval_s=min_interval_s,
            busy_batch=busy_batch,
            with_next=lambda queued: queued.commit_with_next,
            awaited=lambda queued: queued.awaited,
            unawaited_interval_s=unawaited_interval_s,
        )
        self.on_batch: list = []  # callables(rows: int, seconds: float), e.g. metrics

    @property
    def pending(self) -> int:
        return len(self._committer)

    def start(self) -> None:
        self._committer.start()

    async def stop(self, grace_s: float) -> None:
        """Commit everything queued (waiting at most `grace_s`), then stop."""
        left = await self._committer.stop(grace_s)
        if left:
            log.error("update log: %d updates not committed at shutdown", len(left))

    def check_room(self, size: int) -> None:
        """Raise LogFull if an update of `size` bytes could not be queued now."""
        if self._committer.stopping:
            raise LogFull("the server is shutting down")
        if self._pending_bytes + size > self.max_pending_bytes:
            raise LogFull("too many updates are waiting for the database")

    def append(
        self,
        project_id: str,
        update: bytes,
        actor: str,
        status_epochs: bytes = b"",
        *,
        commit_with_next: bool = False,
        on_commit: OnCommit | None = None,
        awaited: bool = True,
    ) -> asyncio.Future[int]:
        """Queue one update; the future resolves with its seq once committed.

        `on_commit(seq, size)` is called at once after COMMIT, before the future's own
        callbacks (each of those is a loop callback of its own: on every update's path,
        this costs less). It must not raise.

        The byte bound is checked by `check_room` before an update is applied to a live
        document; refusing here, after it was applied, would leave it applied but
        never stored.

        `commit_with_next`: the next row appended commits in the same transaction as
        this one. A client update and the server's repair of it are appended back to
        back (with no await between); were a batch cut between them, a crash could
        store the broken update without its repair.

        `awaited`: someone waits for this commit (an ack, a request); False lets it wait
        for the longer `unawaited_interval_s` while nothing awaited is queued.
        """
        if self._committer.stopping:
            raise LogFull("the server is shutting down")
        loop = self._loop
        if loop is None:  # asyncio's lookup makes a system call (getpid) each time
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        row = PendingAppend(project_id, update, actor, status_epochs)
        queued = _Queued(row, future, commit_with_next, on_commit, awaited)
        self._committer.put(queued)
        self._pending_bytes += queued.size
        return future

    async def flush(self, project_id: str | None = None) -> None:
        """Wait until every update queued so far (for one project, or all) is committed."""
        waiting = [
            q.committed
            for q in self._committer.items()
            if project_id is None or q.row.project_id == project_id
        ]
        if waiting:
            self._committer.hurry()
            await asyncio.gather(*(asyncio.shield(f) for f in waiting))

    async def _commit(self, batch: list[_Queued]) -> None:
        while batch:
            # Rows of one project must be contiguous for the store; keep arrival order
            # within each project.
            batch.sort(key=lambda q: q.row.project_id)
            started = time.perf_counter()
            try:
                seqs = await self.store.append([q.row for q in batch])
            except ProjectNotFound as exc:
                # Retrying would never succeed and would hold back every other project.
                self._reject(exc)
                batch = [q for q in batch if q.row.project_id != exc.project_id]
                continue
            except Exception:  # the database is down or failed: the committer retries
                self.healthy = False
                self.stats.failures += 1
                raise
            elapsed = time.perf_counter() - started
            self.healthy = True
            self.stats.rows, self.stats.seconds = len(batch), elapsed
            for hook in self.on_batch:
                hook(len(batch), elapsed)
            for queued, seq in zip(batch, seqs, strict=True):
                self._pending_bytes -= queued.size
                if not queued.committed.done():
                    queued.committed.set_result(seq)
                if queued.on_commit is not None:
                    try:
                        queued.on_commit(seq, len(queued.row.update))
                    except Exception:  # one row's listener must not fail the others
                        log.exception("update log: a commit listener failed")
            return

    def _reject(self, exc: ProjectNotFound) -> None:
        """Fail every queued update of a project that does not exist (never acked)."""
        log.error(
            "update log: dropping updates of a missing project: %s",
            exc,
            extra={"project_id": exc.project_id},
        )
        for queued in self._committer.discard(lambda q: q.row.project_id == exc.project_id):
            self._pending_bytes -= queued.size
            if not queued.committed.done():
                queued.committed.set_exception(exc)
