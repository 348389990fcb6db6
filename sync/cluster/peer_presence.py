"""A project's presence across instances: this instance's entry per room in Redis (with
an expiry, so a dead instance's clients disappear everywhere), and every instance's
entries read back for the API."""

from __future__ import annotations

from typing import Any

from blackboard.sync.cluster.redis_bus import RedisUnavailable
from blackboard.sync.cluster.redis_presence import PresenceDirectory
from blackboard.sync.cluster.room_link import RoomLink
from blackboard.sync.room.presence import local_presence
from blackboard.sync.room.room import Room


class PeerPresence:
    def __init__(self, directory: PresenceDirectory, *, instance_id: str) -> None:
        self.directory = directory
        self.instance_id = instance_id

    async def write(self, link: RoomLink) -> None:
        """Put this instance's entry for the room, or remove it once no one is here."""
        link.presence_dirty = False
        room = link.room
        if room.connections:
            entry = local_presence(room, self.instance_id)
            await self.directory.put(room.project_id, self.instance_id, entry)
            link.presence_listed = True
        elif link.presence_listed:
            await self.remove(link)

    async def remove(self, link: RoomLink) -> None:
        await self.directory.remove(link.room.project_id, self.instance_id)
        link.presence_listed = False

    async def of_project(self, project_id: str, room: Room | None) -> dict[str, Any]:
        """Every instance's clients of the project; this instance's from memory."""
        here = local_presence(room, self.instance_id)
        try:
            entries = await self.directory.entries(project_id)
        except RedisUnavailable as exc:
            return {"instances": [here] if room else [], "complete": False, "detail": str(exc)}
        others = [e for e in entries if e.get("instance_id") != self.instance_id]
        instances = sorted([*others, *([here] if room and room.connections else [])], key=_by_id)
        return {"instances": instances, "complete": True}


def _by_id(entry: dict[str, Any]) -> str:
    return str(entry.get("instance_id", ""))
