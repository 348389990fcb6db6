"""The rooms of this process: one per loaded project, loaded once, unloaded when idle.

Concurrent first joiners share one load. A room that is unloading is flushed and
compacted before it leaves the map; a joiner that arrives meanwhile waits for that and
then loads the room afresh from storage, so nothing written before the unload is lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pycrdt import Doc

from blackboard.persistence.compaction import CompactionResult
from blackboard.persistence.compaction_worker import CompactionWorker
from blackboard.persistence.replay import apply, parts
from blackboard.persistence.store import Store
from blackboard.persistence.tasks import cancel_and_wait
from blackboard.persistence.update_log import UpdateLog
from blackboard.sync.room import fresh_join
from blackboard.sync.room.awareness import AwarenessLimits
from blackboard.sync.room.connection import Connection
from blackboard.sync.room.extensions import Extension
from blackboard.sync.room.load_plan import Planner, plan_in_thread, planned
from blackboard.sync.room.room import Room
from blackboard.sync.rules.lattice import LatticeTracker
from blackboard.sync.rules.repair_limit import RepairPolicy
from blackboard.sync.wire import close_codes
from blackboard.sync.wire.protocol import sync_step2
from blackboard.sync.wire.yjs_encoding import EMPTY_STATE_VECTOR

log = logging.getLogger(__name__)


# Compaction rewrites the whole document, while the log tail it saves a load from
# replaying costs by the row: the row threshold counts per MiB of the document, so that a
# 20 MB document is not re-encoded and stored again (0.3 s of work, and a 20 MB snapshot
# kept for the history window) for every thousand small updates.
COMPACT_ROWS_PER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RoomPolicy:
    idle_unload_s: float = 30.0
    compact_after_rows: int = 1000  # per MiB of the document (`COMPACT_ROWS_PER_BYTES`)
    compact_after_bytes: int = 4 * 1024 * 1024
    flush_timeout_s: float = 30.0
    load_timeout_s: float = 60.0
    max_document_bytes: int = 64 * 1024 * 1024
    repair: RepairPolicy = field(default_factory=RepairPolicy)
    awareness: AwarenessLimits = field(default_factory=AwarenessLimits)


class RoomManager:
    def __init__(
        self,
        store: Store,
        update_log: UpdateLog,
        compactor: CompactionWorker,
        policy: RoomPolicy,
        extensions: list[Extension] | None = None,
        planner: Planner = plan_in_thread,  # the server's: its DocWorker's child process
    ) -> None:
        self.store = store
        self.planner = planner
        self.update_log = update_log
        self.compactor = compactor
        self.policy = policy
        self.extensions = extensions or []
        self.rooms: dict[str, Room] = {}
        compactor.on_done.append(self._compacted)
        self._loading: dict[str, asyncio.Future[Room]] = {}
        self._unloading: dict[str, asyncio.Future[None]] = {}  # done once flushed
        self._reaper: asyncio.Task[None] | None = None
        self.on_room_count: list[Callable[[int], None]] = []

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle(), name="room-reaper")

    async def get(self, project_id: str) -> Room:
        """The loaded room of `project_id`; ProjectNotFound if there is no such project."""
        while True:
            unloading = self._unloading.get(project_id)
            if unloading is not None:
                await asyncio.shield(unloading)
                continue
            room = self.rooms.get(project_id)
            if room is not None and not room.closing:
                return room
            if room is not None:  # failed room: drop it and reload
                self._drop(room)
            loading = self._loading.get(project_id)
            if loading is None:
                loading = asyncio.ensure_future(self._load(project_id))
                self._loading[project_id] = loading
                loading.add_done_callback(functools.partial(self._loaded, project_id))
            await asyncio.wait_for(asyncio.shield(loading), self.policy.load_timeout_s)
            # Loop: the room may have started unloading while this task waited.

    def _loaded(self, project_id: str, loading: asyncio.Future[Room]) -> None:
        """A load ended. Its failure reaches the joiners still waiting for it; one whose
        joiners all gave up (`load_timeout_s`) is logged here, not left to asyncio's
        "exception was never retrieved" when the task is collected."""
        self._loading.pop(project_id, None)
        if not loading.cancelled() and (failure := loading.exception()) is not None:
            _failed(project_id, "load", failure)

    async def join(self, project_id: str, connection: Connection) -> Room:
        """Load if needed and join, in one step with no await between them."""
        room = await self.get(project_id)
        room.join(connection)
        return room

    async def _load(self, project_id: str) -> Room:
        stored = await self.store.load(project_id)
        # Raises CorruptDocument: a failed load is an error.
        state, plan = await asyncio.wait_for(
            planned(stored, self.planner), self.policy.load_timeout_s
        )
        # The live Doc, its validator's shadow copy and the status lattices' index are
        # built a chunk at a time, letting the other rooms run between chunks.
        doc, shadow, lattice = Doc(), Doc(), LatticeTracker()
        for number, chunk in enumerate(plan.chunks(state), 1):
            what = f"chunk {number} of the document"
            apply(doc, chunk, what)
            apply(shadow, chunk, what)
            lattice.load_part(chunk)
            await asyncio.sleep(0)
        if plan.held_back:  # the rows as stored bring back what the encoding left out
            for what, update in parts(stored)[1 if stored.snapshot else 0 :]:
                apply(doc, update, what)
                apply(shadow, update, what)
                await asyncio.sleep(0)
        for _ in lattice.finishing_load(plan.shown, stored.status_epochs):
            await asyncio.sleep(0)
        # `state` is the document's encoding: a fresh joiner's step 2 reuses it instead of
        # encoding a 20 MB document again with the GIL held; unchanged as long as only a
        # snapshot was loaded (the usual load, after an idle unload compacted the room),
        # with the changes since for a big document (`fresh_join`).
        snapshot_alone = stored.snapshot is not None and not stored.tail
        kept = snapshot_alone or len(state) >= fresh_join.MIN_BYTES
        # Framed in a thread: joining 20 MB lets go of the GIL while it copies, and on the
        # loop the copy held every room for 20-30 ms (bench/RESULTS.md, no stalls).
        fresh_reply = await asyncio.to_thread(sync_step2, state) if kept else None
        tail_bytes = sum(len(entry.update) for entry in stored.tail)
        snapshot_bytes = len(stored.snapshot.state) if stored.snapshot else 0
        room = Room(
            project_id,
            doc,
            stored.seq,
            update_log=self.update_log,
            extensions=self.extensions,
            on_tail_grown=self._maybe_compact,
            max_document_bytes=self.policy.max_document_bytes,
            size_estimate=snapshot_bytes + tail_bytes,
            lattice=lattice,
            shadow=shadow,
            repair_policy=self.policy.repair,
            awareness_limits=self.policy.awareness,
        )
        if fresh_reply is not None:
            room.fresh_join.reset(fresh_reply)
            if snapshot_alone:
                room.step2_cache.put(EMPTY_STATE_VECTOR, fresh_reply)
        room.tail_rows = len(stored.tail)
        room.tail_bytes = tail_bytes
        room.compacted_bytes = len(state)
        self.rooms[project_id] = room
        self._count_changed()
        for ext in self.extensions:
            ext.on_loaded(room)
        return room

    def _maybe_compact(self, room: Room) -> None:
        mib = max(1, room.compacted_bytes // COMPACT_ROWS_PER_BYTES)
        if (
            room.tail_rows >= self.policy.compact_after_rows * mib
            or room.tail_bytes >= self.policy.compact_after_bytes
        ):
            room.tail_rows = room.tail_bytes = 0
            self.compactor.request(room.project_id)

    def _compacted(self, result: CompactionResult, seconds: float) -> None:
        room = self.rooms.get(result.project_id)
        if room is not None and result.skipped is None:
            room.compacted_bytes = result.snapshot_bytes

    async def unload(self, project_id: str) -> None:
        """Flush, forget and compact one room (it must have no connections)."""
        room = self.rooms.get(project_id)
        if room is None or room.connections or project_id in self._unloading:
            return
        flushed = asyncio.get_running_loop().create_future()
        self._unloading[project_id] = flushed
        task = asyncio.create_task(self._unload(room, flushed), name=f"unload-{project_id}")
        await asyncio.shield(task)

    async def _unload(self, room: Room, flushed: asyncio.Future[None]) -> None:
        """A join waits for the flush only: compaction, in the DocWorker's child at a
        lower priority, can take seconds on a busy machine, and a load is consistent with
        it running (as it runs beside a live room)."""
        room.closing = True
        try:
            await asyncio.wait_for(
                self.update_log.flush(room.project_id), self.policy.flush_timeout_s
            )
        except Exception as exc:  # a timeout too: everything acknowledged is in the log
            _failed(room.project_id, "unload flush", exc)
        finally:
            self._drop(room)
            del self._unloading[room.project_id]
            flushed.set_result(None)
        try:
            await self.compactor.compact_now(room.project_id)
        except Exception as exc:  # compaction can wait
            _failed(room.project_id, "compaction at unload", exc)

    def _drop(self, room: Room) -> None:
        if self.rooms.get(room.project_id) is room:
            del self.rooms[room.project_id]
            room.dispose()
            self._count_changed()

    def _count_changed(self) -> None:
        for hook in self.on_room_count:
            hook(len(self.rooms))

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self.policy.idle_unload_s / 2, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for project_id, room in list(self.rooms.items()):
                if not room.connections and now - room.idle_since >= self.policy.idle_unload_s:
                    try:
                        await self.unload(project_id)
                    except Exception:
                        log.exception(
                            "room %s: unload failed", project_id, extra={"project_id": project_id}
                        )

    async def close(self) -> None:
        """Shutdown: close every connection, then flush and compact every room."""
        await cancel_and_wait([self._reaper])
        for room in list(self.rooms.values()):
            for connection in list(room.connections):
                connection.close(close_codes.TRY_AGAIN_LATER, "server shutting down")
                room.leave(connection)
        for project_id in list(self.rooms):
            await self.unload(project_id)
        if self._compacted in self.compactor.on_done:  # a compactor may outlive it
            self.compactor.on_done.remove(self._compacted)


def _failed(project_id: str, what: str, exc: BaseException) -> None:
    log.warning("room %s: %s failed: %r", project_id, what, exc, extra={"project_id": project_id})
