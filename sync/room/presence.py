"""Who is connected to a room on this instance: its part of a project's presence."""

from __future__ import annotations

import json
from typing import Any

from blackboard.sync.room.room import Room
from blackboard.sync.wire.protocol import AwarenessEntry


def local_awareness(room: Room) -> list[AwarenessEntry]:
    """The awareness states set by this instance's own connections (not relayed ones)."""
    local_ids: set[int] = set()
    for connection in room.connections:
        local_ids |= connection.awareness_ids
    return [entry for entry in room.awareness.snapshot() if entry.client_id in local_ids]


def local_presence(room: Room | None, instance_id: str) -> dict[str, Any]:
    """`{instance_id, connections, clients: [{client_id, state}]}` for this instance."""
    if room is None:
        return {"instance_id": instance_id, "connections": 0, "clients": []}
    return {
        "instance_id": instance_id,
        "connections": len(room.connections),
        "clients": [
            {"client_id": entry.client_id, "state": json.loads(entry.state_json)}
            for entry in local_awareness(room)
        ],
    }
