"""Instances and their presence in Redis, with expiry so a dead instance disappears.

    {prefix}instance:{id}                  "1", expires after `ttl_s` unless renewed
    {prefix}presence:{project}             set of instance ids that have an entry
    {prefix}presence:{project}:{instance}  that instance's entry (JSON), same expiry

A live instance renews its keys every `ttl_s / 3`; one that dies (or stops) vanishes
within `ttl_s`, which is also how its peers learn it is gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from blackboard.sync.cluster.redis_bus import RedisBus


class PresenceDirectory:
    def __init__(self, bus: RedisBus, ttl_s: float) -> None:
        self.bus = bus
        self.ttl_ms = max(1, int(ttl_s * 1000))

    def _instance_key(self, instance_id: str) -> str:
        return self.bus.key(f"instance:{instance_id}")

    def _index_key(self, project_id: str) -> str:
        return self.bus.key(f"presence:{project_id}")

    def _entry_key(self, project_id: str, instance_id: str) -> str:
        return self.bus.key(f"presence:{project_id}:{instance_id}")

    async def heartbeat(self, instance_id: str) -> None:
        await self.bus.command("SET", self._instance_key(instance_id), b"1", "PX", self.ttl_ms)

    async def forget(self, instance_id: str) -> None:
        await self.bus.command("DEL", self._instance_key(instance_id))

    async def alive(self, instance_ids: Iterable[str]) -> set[str]:
        """Which of these instances are alive now (their heartbeat has not expired)."""
        ids = sorted(set(instance_ids))
        if not ids:
            return set()
        found = await self.bus.pipeline([("EXISTS", self._instance_key(i)) for i in ids])
        return {instance_id for instance_id, n in zip(ids, found, strict=True) if n}

    async def put(self, project_id: str, instance_id: str, entry: dict[str, Any]) -> None:
        index = self._index_key(project_id)
        await self.bus.pipeline(
            [
                (
                    "SET",
                    self._entry_key(project_id, instance_id),
                    json.dumps(entry),
                    "PX",
                    self.ttl_ms,
                ),
                ("SADD", index, instance_id),
                ("PEXPIRE", index, self.ttl_ms),
            ]
        )

    async def remove(self, project_id: str, instance_id: str) -> None:
        await self.bus.pipeline(
            [
                ("DEL", self._entry_key(project_id, instance_id)),
                ("SREM", self._index_key(project_id), instance_id),
            ]
        )

    async def entries(self, project_id: str) -> list[dict[str, Any]]:
        """Every live instance's entry for the project, ordered by instance id."""
        index = self._index_key(project_id)
        members = sorted(m.decode() for m in await self.bus.command("SMEMBERS", index))
        if not members:
            return []
        values = await self.bus.command("MGET", *(self._entry_key(project_id, m) for m in members))
        gone = [m for m, value in zip(members, values, strict=True) if value is None]
        if gone:  # expired entries of dead instances: tidy the index
            await self.bus.command("SREM", index, *gone)
        return [json.loads(value) for value in values if value is not None]
