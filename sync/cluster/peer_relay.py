"""The fast path through Redis: this instance's updates and awareness are published on
the project's channel as soon as they are applied (before the commit: publishing after
it would add the group commit to every delivery); peers' are applied here with
`Room.apply_peer_update` (sent to local clients, not stored, never published again).
A gap in a peer's message counter, or a reconnect, sends the room to the log."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Histogram

from blackboard.sync.cluster.adoption import Adoption
from blackboard.sync.cluster.catch_up import CatchUp
from blackboard.sync.cluster.redis_bus import RedisBus
from blackboard.sync.cluster.room_link import Pending, RoomLink, RoomLinks
from blackboard.sync.room.origin import Origin
from blackboard.sync.room.presence import local_awareness
from blackboard.sync.rules.validation import MalformedUpdate
from blackboard.sync.wire import peer_messages
from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    ProtocolError,
    decode_awareness,
    encode_awareness,
)

log = logging.getLogger(__name__)


class PeerRelay:
    def __init__(
        self,
        bus: RedisBus,
        links: RoomLinks,
        catch_up: CatchUp,
        adoption: Adoption,
        *,
        instance_id: str,
    ) -> None:
        self.bus = bus
        self.links = links
        self.catch_up = catch_up
        self.adoption = adoption
        self.instance_id = instance_id
        self._channel_prefix = bus.channel("doc:")
        # Not registered on its own: the peer metrics collector yields it.
        self.lag = Histogram(
            "blackboard_redis_lag_seconds",
            "Publish-to-receive time of peer updates through Redis",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=None,
        )

    def channel(self, project_id: str) -> bytes:
        return self.bus.channel(f"doc:{project_id}")

    def publish_update(self, link: RoomLink, update: bytes, origin: Origin) -> None:
        link.counter += 1
        message = peer_messages.encode_update(
            self.instance_id, link.counter, origin.actor, update, time.time_ns() // 1000
        )
        self.bus.publish(link.channel, message)

    def publish_awareness(self, link: RoomLink, payload: bytes) -> None:
        self.bus.publish(link.channel, peer_messages.encode_awareness(self.instance_id, payload))

    def resync(self, link: RoomLink) -> None:
        """What was published while we were not listening is only in the log now; and
        peers are asked for their clients' awareness (ours is announced)."""
        self.catch_up.read_log(link)
        self._announce(link)
        self.bus.publish(link.channel, peer_messages.encode_query(self.instance_id))

    def forget_instance(self, link: RoomLink, instance: str) -> None:
        """An instance died: remove its clients' awareness here and tell ours."""
        self._remove_awareness(link, link.remote_awareness.pop(instance))

    # --- from Redis ----------------------------------------------------------

    def on_message(self, channel: bytes, data: bytes) -> None:
        if not channel.startswith(self._channel_prefix):
            return
        link = self.links.get(channel[len(self._channel_prefix) :].decode())
        if link is None or link.room.closing:
            return
        try:
            message = peer_messages.decode(data)
        except ProtocolError as exc:
            log.warning("peer message on %r ignored: %s", channel, exc)
            return
        if message.instance == self.instance_id:
            return  # Redis delivers our own messages back to us
        if message.kind == peer_messages.UPDATE:
            self._take_update(link, message)
        elif message.kind in (peer_messages.AWARENESS, peer_messages.SNAPSHOT):
            full = message.kind == peer_messages.SNAPSHOT
            self._take_awareness(link, message.instance, message.payload, full=full)
        elif message.kind == peer_messages.QUERY:
            self._announce(link)

    def on_subscribed(self, channel: bytes) -> None:
        for link in self.links.values():
            if link.channel == channel:
                self.resync(link)

    def _take_update(self, link: RoomLink, message: peer_messages.PeerMessage) -> None:
        # Sender's wall clock to ours: across hosts this includes their clock skew.
        self.lag.observe(max(0.0, time.time() - message.sent_at_us / 1e6))
        last = link.last_counter.get(message.instance)
        link.last_counter[message.instance] = message.counter
        if last is not None and message.counter != last + 1:
            self.catch_up.read_log(link)  # we missed messages of that instance
        if message.payload in link.from_log:
            del link.from_log[message.payload]
            return  # the log gave it to us first
        try:
            changed = link.room.apply_peer_update(message.payload, message.actor)
        except MalformedUpdate as exc:
            project_id = link.room.project_id
            log.warning(
                "room %s: peer update does not apply: %s", project_id, exc, extra=link.log_ids
            )
            self.catch_up.read_log(link)
            return
        if not changed:
            return  # here already: from the log, or stored here since (nothing to watch)
        loop_time = asyncio.get_running_loop().time()
        self.adoption.watch(
            link, message.payload, Pending(message.instance, message.actor, loop_time)
        )

    def _take_awareness(self, link: RoomLink, instance: str, payload: bytes, *, full: bool) -> None:
        try:
            entries = decode_awareness(payload)
        except ProtocolError:
            return
        ids = link.remote_awareness.setdefault(instance, set())
        if full:  # that instance's complete list: anything else of its is gone
            self._remove_awareness(link, ids - {e.client_id for e in entries if not e.removed})
            ids.clear()
        for entry in entries:
            if entry.removed:
                ids.discard(entry.client_id)
            else:
                ids.add(entry.client_id)
        link.room.relay_awareness(payload)

    def _remove_awareness(self, link: RoomLink, client_ids: set[int]) -> None:
        """Clients of another instance that are gone: remove them here and tell ours."""
        removals = [
            AwarenessEntry(entry.client_id, entry.clock + 1, "null")
            for entry in link.room.awareness.snapshot()
            if entry.client_id in client_ids
        ]
        if removals:
            link.room.relay_awareness(encode_awareness(removals))

    def _announce(self, link: RoomLink) -> None:
        """Publish the complete list of our clients' awareness states for this room."""
        payload = encode_awareness(local_awareness(link.room))
        self.bus.publish(link.channel, peer_messages.encode_snapshot(self.instance_id, payload))
