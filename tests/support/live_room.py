"""A real Room in this process: SQLite store, group-commit UpdateLog, RoomManager load.

For tests that drive the update pipeline directly (property and fuzz tests), with
clients connected through an in-memory channel instead of a socket, and other
instances' rooms of the same project linked through memory instead of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pycrdt import Doc

from blackboard.persistence.compaction_worker import CompactionWorker
from blackboard.persistence.corrections import CorrectionStore
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.factory import make_store
from blackboard.persistence.update_log import UNAWAITED_INTERVAL_S, UpdateLog
from blackboard.sync.projects.creation import create_project
from blackboard.sync.room.connection import Connection
from blackboard.sync.room.extensions import Extension
from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.room.room import Room
from blackboard.sync.room.rooms import RoomManager, RoomPolicy
from blackboard.sync.rules.correction_recorder import CorrectionRecorder
from blackboard.sync.rules.repair_limit import RepairPolicy


@dataclass
class LiveRoom:
    room: Room
    rooms: RoomManager
    update_log: UpdateLog
    store: DocumentStore
    corrections: CorrectionRecorder
    peers: PeerLink | None = None  # with `linked_rooms`: what goes to the other instances

    async def reload(self) -> Room:
        """Flush, unload and load the room again from storage."""
        await self.rooms.unload(self.room.project_id)
        self.room = await self.rooms.get(self.room.project_id)
        return self.room


class PeerLink(Extension):
    """Instead of Redis: what one instance's rooms accept, queued for the others."""

    def __init__(self) -> None:
        self.outbox: deque[tuple[bytes, str]] = deque()  # (update, actor)

    def on_update(self, room: Room, update: bytes, origin: Origin) -> None:
        if origin.source is not Source.PEER:
            self.outbox.append((update, origin.actor))


@contextlib.asynccontextmanager
async def live_room(
    data_dir: Path,
    project_id: str = "film",
    extensions: list[Extension] | None = None,
    repair: RepairPolicy | None = None,
    unawaited_interval_s: float = UNAWAITED_INTERVAL_S,
) -> AsyncIterator[LiveRoom]:
    async with linked_rooms(data_dir, 1, project_id, extensions, repair, unawaited_interval_s) as (
        live,
    ):
        yield live


@contextlib.asynccontextmanager
async def linked_rooms(
    data_dir: Path,
    count: int,
    project_id: str = "film",
    extensions: list[Extension] | None = None,
    repair: RepairPolicy | None = None,
    unawaited_interval_s: float = UNAWAITED_INTERVAL_S,
) -> AsyncIterator[tuple[LiveRoom, ...]]:
    """`count` instances' rooms of one project on one store; with more than one, each
    has a `PeerLink` the test delivers from (`LiveRoom.peers`)."""
    store = make_store(None, data_dir)
    await store.open(migrate_schema=True)
    update_log = UpdateLog(store, unawaited_interval_s=unawaited_interval_s)
    update_log.start()
    corrections = CorrectionRecorder(CorrectionStore(store.db))
    corrections.start()
    compactor = CompactionWorker(store, timedelta(days=1))
    links = [PeerLink() if count > 1 else None for _ in range(count)]
    managers = [
        RoomManager(
            store,
            update_log,
            compactor,
            RoomPolicy(idle_unload_s=3600, repair=repair or RepairPolicy()),
            [*(extensions or []), *([link] if link else []), corrections],
        )
        for link in links
    ]
    try:
        await create_project(store, project_id, project_id, 100_000, "USD", {}, actor="setup")
        yield tuple(
            [
                LiveRoom(await rooms.get(project_id), rooms, update_log, store, corrections, link)
                for rooms, link in zip(managers, links, strict=True)
            ]
        )
    finally:
        for rooms in managers:
            await rooms.close()
        await update_log.stop(10)
        await corrections.stop(10)
        await store.close()


@dataclass
class MemoryChannel:
    """A connection's transport as a list of frames sent, and the close it got."""

    frames: list[bytes] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    async def send(self, data: bytes) -> None:
        self.frames.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list[bytes]:
        frames, self.frames = self.frames, []
        return frames


def memory_connection(
    actor: str = "client", *, can_write: bool = True, wants_acks: bool = False
) -> Connection:
    return Connection(
        MemoryChannel(),
        project_id="film",
        actor=actor,
        can_write=can_write,
        wants_acks=wants_acks,
        max_queue_bytes=64 * 1024 * 1024,
    )


async def drained(connection: Connection, rounds: int = 1000) -> None:
    """Let the connection's sender task hand every queued frame to its channel."""
    for _ in range(rounds):
        if connection.queued_bytes == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError("the connection did not drain")


def recorded_encodes(monkeypatch: pytest.MonkeyPatch, doc: Doc) -> list[bytes | None]:
    """The state vectors `doc` is asked to encode for (`Doc.get_update`) from now on."""
    asked: list[bytes | None] = []
    get_update = Doc.get_update

    def recording(self: Doc, state: bytes | None = None) -> bytes:
        if self is doc:
            asked.append(state)
        return get_update(self, state)

    monkeypatch.setattr(Doc, "get_update", recording)
    return asked
