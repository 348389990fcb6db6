"""Scale-out: every instance serving a project sees every update, through Redis (the fast
path) and the Postgres log (the truth). Registered as an Extension when
BLACKBOARD_REDIS_URL is set.

Fast path. An update this instance accepts (client or server write) is published once,
on the project's channel, as soon as it is applied: one PUBLISH per update, before its
commit. Publishing after the commit would add the group commit (measured here: p50
1.3 ms, p99 2 ms) to every cross-instance delivery; publishing first adds only the Redis
hop. Receivers apply it with `Room.apply_peer_update` (applied and sent to local clients,
not stored, never published again). Server SyncStep2 replies are never published.

The log is the truth. Each room tracks `log_seq`, up to which every log row is in its
document, and reads the rows after it (`store.read_log`):
- right after its channel subscription is confirmed (what was committed meanwhile);
- when a peer's message counter jumps (a message was lost), or Redis reconnects;
- every `check_s` while Redis is up, every `poll_s` while it is down (the fallback).
Rows it already has (its own commits, updates that came through Redis) are not applied
again; reading them is what confirms that a Redis-delivered update was stored.

An update applied from Redis but never seen in the log is the originator's to store (its
update log retries until it commits). If the originator dies first (its heartbeat in
Redis expires), a peer that applied it stores it ("adoption"): it may then be stored
twice, which replays as a no-op, but it is never only in memory.

Awareness is relayed the same way (removals included); presence entries per instance
live in Redis with an expiry, so a dead instance's clients disappear everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from persistence.errors import LogFull
from persistence.records import LogEntry
from persistence.redis_bus import RedisBus, RedisUnavailable
from persistence.redis_presence import PresenceDirectory
from persistence.store import Store
from persistence.update_log import UpdateLog
from sync import peer_messages
from sync.connection import Connection
from sync.extensions import Extension
from sync.origin import SERVER_ACTOR, Origin
from sync.presence import local_awareness, local_presence
from sync.protocol import AwarenessEntry, ProtocolError, decode_awareness, encode_awareness
from sync.room import Room
from sync.validation import MalformedUpdate

log = logging.getLogger(__name__)

READ_PAGE = 500
READ_TIMEOUT_S = 30.0
RECENT_LOG_ROWS = 4096
PRESENCE_FLUSH_S = 0.25
STOP_TIMEOUT_S = 5.0


def new_instance_id(name: str | None = None) -> str:
    """`name` (default host-pid) plus a random suffix: unique per process start, even when
    a restarted instance keeps its configured name, so peers never take the new process
    for the one that died (whose uncommitted updates they must then store)."""
    return f"{name or f'{socket.gethostname()}-{os.getpid()}'}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class CrossInstancePolicy:
    check_s: float = 2.0  # read the log this often while Redis is up (the safety net)
    poll_s: float = 0.5  # and this often while Redis is down (the fallback path)
    instance_ttl_s: float = 10.0  # a silent instance is dead after this long
    max_unconfirmed: int = 10_000  # Redis-delivered updates not yet seen in the log


@dataclass(frozen=True, slots=True)
class _Pending:
    instance: str
    actor: str
    received: float


class RoomLink:
    """What one loaded room knows about the other instances."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.channel = b""
        self.log_seq = room.seq  # every log row up to here is in room.doc
        self.counter = 0  # updates of this room this instance published
        self.last_counter: dict[str, int] = {}  # per peer instance
        self.own_seqs: set[int] = set()  # this instance's rows committed past log_seq
        self.unconfirmed: dict[bytes, _Pending] = {}  # from Redis, not seen in the log yet
        self.from_log: dict[bytes, None] = {}  # rows read before their Redis copy came
        self.remote_awareness: dict[str, set[int]] = {}  # peer instance -> its client ids
        self.presence_dirty = True
        self.presence_listed = False
        self.reading: asyncio.Task[None] | None = None
        self.read_again = False

    def remember_logged(self, update: bytes) -> None:
        self.from_log[update] = None
        if len(self.from_log) > RECENT_LOG_ROWS:
            del self.from_log[next(iter(self.from_log))]


class CrossInstance(Extension):
    def __init__(
        self,
        bus: RedisBus,
        store: Store,
        update_log: UpdateLog,
        *,
        instance_id: str,
        policy: CrossInstancePolicy,
    ) -> None:
        self.bus = bus
        self.store = store
        self.update_log = update_log
        self.instance_id = instance_id
        self.policy = policy
        self.presence = PresenceDirectory(bus, policy.instance_ttl_s)
        self.links: dict[str, RoomLink] = {}
        self.adopted = 0  # updates stored on behalf of a dead instance
        self.caught_up = 0  # log rows applied that Redis had not delivered
        # Not registered on its own: `collect` below yields it into the app's registry.
        self.lag = Histogram(
            "blackboard_redis_lag_seconds",
            "Publish-to-receive time of peer updates through Redis",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=None,
        )
        self._channel_prefix = bus.channel("doc:")
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._connected_at = 0.0  # loop time of the last (re)connect to Redis
        self._beat_now = False
        bus.on_message = self._on_message
        bus.on_subscribed = self._on_subscribed
        bus.on_connected = self._on_connected

    @property
    def state(self) -> str:
        """For /readyz: "ok", or why not (and that the log is being polled instead)."""
        return "ok" if self.bus.healthy else f"{self.bus.state} (polling the log)"

    async def start(self) -> None:
        await self.bus.start()
        self._tasks = [
            asyncio.create_task(self._follow_loop(), name="peer-log-follower"),
            asyncio.create_task(self._presence_loop(), name="peer-presence"),
        ]

    async def stop(self) -> None:
        """After the rooms are closed: finish their clean-up, leave Redis."""
        for task in self._tasks:
            task.cancel()
        pending = [*self._tasks, *self._side_tasks]
        if pending:
            await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(RedisUnavailable):
            await self.presence.forget(self.instance_id)
        await self.bus.stop()

    # --- room hooks ----------------------------------------------------------

    def on_loaded(self, room: Room) -> None:
        link = RoomLink(room)
        link.channel = self.bus.channel(f"doc:{room.project_id}")
        self.links[room.project_id] = link
        # Catch-up and the awareness query follow once Redis confirms the subscription.
        self.bus.subscribe(link.channel)

    def on_update(self, room: Room, update: bytes, origin: Origin) -> None:
        link = self._link(room)
        if link is None:
            return
        link.counter += 1
        message = peer_messages.encode_update(
            self.instance_id, link.counter, origin.actor, update, time.time_ns() // 1000
        )
        self.bus.publish(link.channel, message)

    def on_committed(self, room: Room, seq: int, size: int) -> None:
        link = self._link(room)
        if link is not None and seq > link.log_seq:
            link.own_seqs.add(seq)

    def on_awareness(self, room: Room, payload: bytes, origin: Origin) -> None:
        link = self._link(room)
        if link is None:
            return
        link.presence_dirty = True
        self.bus.publish(link.channel, peer_messages.encode_awareness(self.instance_id, payload))

    def on_join(self, room: Room, connection: Connection) -> None:
        self._presence_changed(room)

    def on_leave(self, room: Room, connection: Connection) -> None:
        self._presence_changed(room)

    def on_unloaded(self, room: Room) -> None:
        link = self._link(room)
        if link is None:
            return
        del self.links[room.project_id]
        self.bus.unsubscribe(link.channel)
        if link.reading is not None:
            link.reading.cancel()
        self._spawn(self._release(link))

    def _link(self, room: Room) -> RoomLink | None:
        link = self.links.get(room.project_id)
        return link if link is not None and link.room is room else None

    def _presence_changed(self, room: Room) -> None:
        link = self._link(room)
        if link is not None:
            link.presence_dirty = True

    # --- from Redis ----------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
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

    def _on_subscribed(self, channel: bytes) -> None:
        for link in self.links.values():
            if link.channel == channel:
                self._resync(link)

    def _on_connected(self) -> None:
        # Redis may have restarted empty: our heartbeat and presence entries go back at
        # once, and peers' liveness is not judged until they have had time to do the same.
        self._connected_at = asyncio.get_running_loop().time()
        self._beat_now = True
        # Whatever was published while we were not listening is only in the log now.
        for link in list(self.links.values()):
            link.presence_dirty = True
            self._resync(link)

    def _resync(self, link: RoomLink) -> None:
        self.read_log(link)
        self._announce(link)
        self.bus.publish(link.channel, peer_messages.encode_query(self.instance_id))

    def _take_update(self, link: RoomLink, message: peer_messages.PeerMessage) -> None:
        # Sender's wall clock to ours: across hosts this includes their clock skew.
        self.lag.observe(max(0.0, time.time() - message.sent_at_us / 1e6))
        last = link.last_counter.get(message.instance)
        link.last_counter[message.instance] = message.counter
        if last is not None and message.counter != last + 1:
            self.read_log(link)  # we missed messages of that instance
        if message.payload in link.from_log:
            del link.from_log[message.payload]
            return  # the log gave it to us first
        try:
            changed = link.room.apply_peer_update(message.payload, message.actor)
        except MalformedUpdate as exc:
            log.warning("room %s: peer update does not apply: %s", link.room.project_id, exc)
            self.read_log(link)
            return
        if not changed:
            return  # here already: from the log, or stored here since (nothing to watch)
        loop_time = asyncio.get_running_loop().time()
        link.unconfirmed[message.payload] = _Pending(message.instance, message.actor, loop_time)
        if len(link.unconfirmed) > self.policy.max_unconfirmed:
            # Bounded memory: store the oldest ourselves (at worst a harmless duplicate).
            oldest = next(iter(link.unconfirmed))
            self._adopt(link, [oldest])

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

    # --- from the log --------------------------------------------------------

    def read_log(self, link: RoomLink) -> asyncio.Task[None]:
        """Catch up from the log (one reader per room; a request while it runs makes it
        read once more, since the rows asked for may have committed after its query)."""
        if link.reading is not None and not link.reading.done():
            link.read_again = True
            return link.reading
        link.reading = asyncio.create_task(self._read_until_current(link))
        return link.reading

    async def _read_until_current(self, link: RoomLink) -> None:
        while True:
            link.read_again = False
            try:
                await self._read_rows(link)
            except Exception as exc:  # the database is down: the next check retries
                log.warning("room %s: catch-up failed: %s", link.room.project_id, exc)
                return
            if not link.read_again:
                return

    async def _read_rows(self, link: RoomLink) -> None:
        room = link.room
        while self.links.get(room.project_id) is link and not room.closing:
            rows = await asyncio.wait_for(
                self.store.read_log(room.project_id, link.log_seq, READ_PAGE), READ_TIMEOUT_S
            )
            if not rows:
                return
            if rows[0].seq != link.log_seq + 1:
                await self._read_snapshot(link)  # the log was pruned past our position
                continue
            for row in rows:
                self._take_row(link, row)
            link.log_seq = rows[-1].seq
            room.seq = max(room.seq, link.log_seq)
            link.own_seqs = {seq for seq in link.own_seqs if seq > link.log_seq}
            if len(rows) < READ_PAGE:
                return

    async def _read_snapshot(self, link: RoomLink) -> None:
        stored = await asyncio.wait_for(self.store.load(link.room.project_id), READ_TIMEOUT_S)
        if stored.snapshot is not None:
            # A snapshot is stored state: what it shows of server-only fields is the truth.
            what = f"snapshot {stored.snapshot.upto_seq}"
            self._apply_stored(link, stored.snapshot.state, SERVER_ACTOR, what)
        for row in stored.tail:
            self._take_row(link, row)
        link.log_seq = max(link.log_seq, stored.seq)

    def _take_row(self, link: RoomLink, row: LogEntry) -> None:
        if row.seq in link.own_seqs:
            return
        if link.unconfirmed.pop(row.update, None) is not None:
            return  # Redis brought it already; now we know it is stored
        link.remember_logged(row.update)
        if self._apply_stored(link, row.update, row.actor, f"log row {row.seq}"):
            self.caught_up += 1

    def _apply_stored(self, link: RoomLink, update: bytes, actor: str, what: str) -> bool:
        try:
            link.room.apply_peer_update(update, actor)
        except MalformedUpdate as exc:
            log.error("room %s: %s does not apply: %s", link.room.project_id, what, exc)
            return False
        return True

    async def _follow_loop(self) -> None:
        while True:
            healthy = self.bus.healthy
            await asyncio.sleep(self.policy.check_s if healthy else self.policy.poll_s)
            try:
                await self._read_behind()
            except Exception as exc:
                log.warning("log check failed: %s", exc)

    async def _read_behind(self) -> None:
        """Catch up every room whose project has log rows past its position."""
        links = list(self.links.values())
        if not links:
            return
        latest = await asyncio.wait_for(
            self.store.latest_seqs([link.room.project_id for link in links]), READ_TIMEOUT_S
        )
        readers = [
            self.read_log(link)
            for link in links
            if latest.get(link.room.project_id, 0) > link.log_seq
        ]
        if readers:
            await asyncio.wait(readers, timeout=READ_TIMEOUT_S)

    # --- presence, liveness and adoption -------------------------------------

    async def _presence_loop(self) -> None:
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
                    next_beat = loop.time() + self.policy.instance_ttl_s / 3
                    await self.presence.heartbeat(self.instance_id)
                for link in list(self.links.values()):
                    if link.presence_dirty or (beat and link.presence_listed):
                        await self._write_presence(link)
                if beat and loop.time() - self._connected_at >= self.policy.instance_ttl_s:
                    await self._check_peers()  # every live peer has beaten since we connected
            except RedisUnavailable as exc:
                log.debug("presence update failed: %s", exc)

    async def _write_presence(self, link: RoomLink) -> None:
        link.presence_dirty = False
        room = link.room
        if room.connections:
            entry = local_presence(room, self.instance_id)
            await self.presence.put(room.project_id, self.instance_id, entry)
            link.presence_listed = True
        elif link.presence_listed:
            await self.presence.remove(room.project_id, self.instance_id)
            link.presence_listed = False

    async def _check_peers(self) -> None:
        """Forget the clients of instances that died; store what only they had sent."""
        links = list(self.links.values())
        peers = {i for link in links for i in link.remote_awareness}
        peers |= {p.instance for link in links for p in self._overdue(link)}
        if not peers:
            return
        alive = await self.presence.alive(peers)
        for link in links:
            for instance in [i for i in link.remote_awareness if i not in alive]:
                self._remove_awareness(link, link.remote_awareness.pop(instance))
            if any(p.instance not in alive for p in self._overdue(link)):
                await self.read_log(link)  # confirm what was stored in the meantime
                orphans = [u for u, p in link.unconfirmed.items() if p.instance not in alive]
                self._adopt(link, orphans)

    def _overdue(self, link: RoomLink) -> list[_Pending]:
        """Redis-delivered updates the log should have shown by now."""
        cutoff = asyncio.get_running_loop().time() - 2 * self.policy.check_s
        return [p for p in link.unconfirmed.values() if p.received < cutoff]

    def _adopt(self, link: RoomLink, updates: list[bytes]) -> None:
        for update in updates:
            pending = link.unconfirmed.get(update)
            if pending is None:
                continue
            try:
                self.update_log.append(link.room.project_id, update, pending.actor)
            except LogFull as exc:
                log.warning("room %s: cannot store a peer's update: %s", link.room.project_id, exc)
                return
            del link.unconfirmed[update]
            self.adopted += 1
            log.info(
                "room %s: stored an update of instance %s, which did not",
                link.room.project_id,
                pending.instance,
            )

    async def _release(self, link: RoomLink) -> None:
        """A room was unloaded: leave the presence list; store what dead peers left."""
        try:
            if link.presence_listed:
                await self.presence.remove(link.room.project_id, self.instance_id)
            if link.unconfirmed:
                alive = await self.presence.alive(p.instance for p in link.unconfirmed.values())
                orphans = [u for u, p in link.unconfirmed.items() if p.instance not in alive]
                self._adopt(link, orphans)
        except RedisUnavailable as exc:
            log.debug("room %s: release incomplete: %s", link.room.project_id, exc)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # --- metrics (a Prometheus collector, read when scraped) -----------------

    def collect(self) -> Iterator[Metric]:
        bus = self.bus
        yield GaugeMetricFamily(
            "blackboard_redis_up", "1 if the Redis bus is up", value=bus.healthy
        )
        for name, help_text, value in (
            ("published", "Peer messages sent to Redis", bus.published),
            ("dropped", "Peer messages not sent (Redis down or queue full)", bus.dropped),
            ("received", "Peer messages received from Redis", bus.received),
        ):
            yield CounterMetricFamily(f"blackboard_peer_messages_{name}", help_text, value=value)
        yield CounterMetricFamily(
            "blackboard_peer_updates_caught_up",
            "Log rows applied that Redis had not delivered",
            value=self.caught_up,
        )
        yield CounterMetricFamily(
            "blackboard_peer_updates_adopted",
            "Updates stored on behalf of an instance that died before storing them",
            value=self.adopted,
        )
        yield from self.lag.collect()

    # --- presence for the API ------------------------------------------------

    async def presence_of(self, project_id: str, room: Room | None) -> dict[str, Any]:
        """Every instance's clients of the project; this instance's from memory."""
        here = local_presence(room, self.instance_id)
        try:
            entries = await self.presence.entries(project_id)
        except RedisUnavailable as exc:
            return {"instances": [here] if room else [], "complete": False, "detail": str(exc)}
        others = [e for e in entries if e.get("instance_id") != self.instance_id]
        instances = sorted([*others, *([here] if room and room.connections else [])], key=_by_id)
        return {"instances": instances, "complete": True}


def _by_id(entry: dict[str, Any]) -> str:
    return str(entry.get("instance_id", ""))
