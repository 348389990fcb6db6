"""What one loaded room knows about the other instances (`RoomLink`), and the links of
every loaded room: the state the parts of `blackboard.sync.cluster.cross_instance` share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from blackboard.sync.room.room import Room

RECENT_LOG_ROWS = 4096


@dataclass(frozen=True, slots=True)
class Pending:
    """An update applied from Redis and not seen in the log yet."""

    instance: str
    actor: str
    received: float


class RoomLink:
    def __init__(self, room: Room, channel: bytes) -> None:
        self.room = room
        self.channel = channel
        self.log_seq = room.seq  # every log row up to here is in room.doc
        self.counter = 0  # updates of this room this instance published
        self.last_counter: dict[str, int] = {}  # per peer instance
        self.own_seqs: set[int] = set()  # this instance's rows committed past log_seq
        self.unconfirmed: dict[bytes, Pending] = {}  # from Redis, not seen in the log yet
        self.from_log: dict[bytes, None] = {}  # rows read before their Redis copy came
        self.remote_awareness: dict[str, set[int]] = {}  # peer instance -> its client ids
        self.presence_dirty = True
        self.presence_listed = False
        self.reading: asyncio.Task[None] | None = None
        self.read_again = False

    @property
    def log_ids(self) -> dict[str, object]:
        """Log fields that tie an event to this project (JSON logs)."""
        return {"project_id": self.room.project_id}

    def remember_logged(self, update: bytes) -> None:
        self.from_log[update] = None
        if len(self.from_log) > RECENT_LOG_ROWS:
            del self.from_log[next(iter(self.from_log))]


class RoomLinks(dict[str, RoomLink]):
    """The link of every loaded room, by project id."""

    def of(self, room: Room) -> RoomLink | None:
        """The room's link, if it is still this room's (not one loaded since)."""
        link = self.get(room.project_id)
        return link if link is not None and link.room is room else None

    def current(self, link: RoomLink) -> bool:
        """Whether `link` is still its room's (the room was not unloaded meanwhile)."""
        return self.get(link.room.project_id) is link
