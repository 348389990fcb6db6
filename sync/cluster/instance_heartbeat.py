"""Liveness: this instance's heartbeat in Redis (every `instance_ttl_s / 3`, at once
after a reconnect), its presence entries kept fresh with it, and the judgement of peers:
an instance whose heartbeat expired is dead, its clients are removed and what only it
had sent is adopted."""

from __future__ import annotations

import asyncio
import logging

from blackboard.sync.cluster.adoption import Adoption
from blackboard.sync.cluster.peer_presence import PeerPresence
from blackboard.sync.cluster.peer_relay import PeerRelay
from blackboard.sync.cluster.redis_bus import RedisBus, RedisUnavailable
from blackboard.sync.cluster.redis_presence import PresenceDirectory
from blackboard.sync.cluster.room_link import RoomLinks

log = logging.getLogger(__name__)

PRESENCE_FLUSH_S = 0.25


class InstanceHeartbeat:
    def __init__(
        self,
        bus: RedisBus,
        directory: PresenceDirectory,
        links: RoomLinks,
        presence: PeerPresence,
        relay: PeerRelay,
        adoption: Adoption,
        *,
        instance_id: str,
        ttl_s: float,
    ) -> None:
        self.bus = bus
        self.directory = directory
        self.links = links
        self.presence = presence
        self.relay = relay
        self.adoption = adoption
        self.instance_id = instance_id
        self.ttl_s = ttl_s
        self._connected_at = 0.0  # loop time of the last (re)connect to Redis
        self._beat_now = False

    def reconnected(self) -> None:
        """Redis may have restarted empty: our heartbeat and presence entries go back at
        once, and peers' liveness is not judged until they have had time to do the same."""
        self._connected_at = asyncio.get_running_loop().time()
        self._beat_now = True
        for link in self.links.values():
            link.presence_dirty = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = 0.0
        while True:
            await asyncio.sleep(PRESENCE_FLUSH_S)
            if not self.bus.healthy:
                continue
            beat = self._beat_now or loop.time() >= next_beat
            self._beat_now = False
            try:
                if beat:
                    next_beat = loop.time() + self.ttl_s / 3
                    await self.directory.heartbeat(self.instance_id)
                for link in list(self.links.values()):
                    if link.presence_dirty or (beat and link.presence_listed):
                        await self.presence.write(link)
                if beat and loop.time() - self._connected_at >= self.ttl_s:
                    await self._check_peers()  # every live peer has beaten since we connected
            except RedisUnavailable as exc:
                log.debug("presence update failed: %s", exc)

    async def _check_peers(self) -> None:
        """Forget the clients of instances that died; store what only they had sent."""
        links = list(self.links.values())
        peers = {i for link in links for i in link.remote_awareness}
        peers |= {p.instance for link in links for p in self.adoption.overdue(link)}
        if not peers:
            return
        alive = await self.directory.alive(peers)
        for link in links:
            for instance in [i for i in link.remote_awareness if i not in alive]:
                self.relay.forget_instance(link, instance)
            await self.adoption.adopt_overdue(link, alive)
