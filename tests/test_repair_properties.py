"""Property: whatever the interleaving of concurrent client edits through a real Room,
every replica converges on one repaired document, and every status ends at the lattice
maximum of what was written in the highest epoch (task attempt, shot revision).

Clients are pycrdt Docs speaking the sync protocol to a Room (SQLite store, group-commit
log) through in-memory connections. Hypothesis chooses their client ids (which decide
last-writer-wins races), their edits, when each message is delivered, who goes offline
and edits there, when stale replicas rejoin (sync step 1/2 as y-websocket does it) and
when the room is unloaded and loaded again.

What "written" means: a value a client published, i.e. one that reached the server in an
update: online edits are sent one update per transaction; a replica that was offline
sends, when it rejoins, its document's difference, which holds the last value it wrote
to each field (earlier ones it overwrote itself were never published). A status counts
for the epoch its writer saw (or set, for a retry or a rework). Clients are well-behaved
agents: a retry writes `attempt` and `status: pending` together (a rework: `revision`
and `status: draft`), and a client applies what the server sent only once its own edits
are delivered (so it never builds on a mixed state the server is about to repair).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from blackboard.schemas.document import SHOT_STATUS, TASK_STATUS, Lattice
from blackboard.schemas.views import doc_to_json
from blackboard.sync.room.connection import Connection
from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.room.room import Room
from blackboard.sync.rules.repair_limit import RepairPolicy
from blackboard.sync.wire.protocol import (
    SyncMessage,
    SyncType,
    decode_message,
    sync_step1,
    sync_step2,
    sync_update,
)
from tests.support.api import eventually
from tests.support.live_room import (
    LiveRoom,
    MemoryChannel,
    drained,
    linked_rooms,
    memory_connection,
)

TASKS = ("T1", "T2")
SHOTS = ("S1",)
REMOTE = "from-server"


@dataclass(frozen=True)
class Write:
    root: str
    entry: str
    name: str
    value: Any
    epoch: float  # the attempt (tasks) or revision (shots) its writer saw


@dataclass
class SimClient:
    name: str
    doc: Doc
    home: int  # the instance it connects to
    connection: Connection | None = None
    online: bool = False
    inflight: deque[tuple[bytes, list[Write]]] = field(default_factory=deque)
    unsent: list[Write] = field(default_factory=list)  # written while cut off
    _writing: list[Write] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._subscription = self.doc.observe(self._captured)

    def _captured(self, event: Any) -> None:
        if event.transaction.origin() == hash(REMOTE):
            return
        if self.online:
            self.inflight.append((event.update, self._writing))
        else:
            self.unsent.extend(self._writing)

    @property
    def channel(self) -> MemoryChannel:
        assert self.connection is not None
        return self.connection.channel  # type: ignore[return-value]

    def edit(self, writes: list[Write]) -> None:
        self._writing = writes
        with self.doc.transaction():
            for w in writes:
                entry = self.doc.get(w.root, type=Map)[w.entry]
                entry[w.name] = w.value
        self._writing = []

    def view_epoch(self, root: str, entry: str) -> float:
        epoch = self.doc.get(root, type=Map)[entry].get(LATTICES[root].epoch_field)
        return float(epoch) if isinstance(epoch, int | float) else 0.0

    def apply_remote(self, frames: list[bytes]) -> None:
        for frame in frames:
            message = decode_message(frame)
            if isinstance(message, SyncMessage) and message.kind != SyncType.STEP1:
                with self.doc.transaction(origin=REMOTE):
                    self.doc.apply_update(message.payload)


class World:
    """The server rooms (one per instance), the clients, and the model of what was
    published."""

    def __init__(self, lives: tuple[LiveRoom, ...], client_ids: list[int]) -> None:
        self.lives = lives
        self.clients = [
            SimClient(f"c{i}", Doc(client_id=cid), i % len(lives))
            for i, cid in enumerate(client_ids)
        ]
        self.published: list[Write] = []

    def room(self, client: SimClient) -> Room:  # a new one after each reload
        return self.lives[client.home].room

    async def setup(self) -> None:
        first = self.lives[0].room
        author = Doc(client_id=1)
        author.apply_update(first.doc.get_update())
        initial = [Write("shots", s, "status", "draft", 0.0) for s in SHOTS]
        with author.transaction():
            for s in SHOTS:
                author.get("shots", type=Map)[s] = Map({"title": s, "status": "draft"})
            for t in TASKS:
                author.get("tasks", type=Map)[t] = Map({"status": "pending", "attempt": 1})
                initial += [Write("tasks", t, "status", "pending", 1.0)]
                initial += [Write("tasks", t, "attempt", 1, 1.0)]
        first.apply_update(author.get_update(), Origin(Source.CLIENT, "setup"))
        self.published += initial
        self.relay_all()
        for client in self.clients:
            await self.rejoin(client)
            await self.deliver_down(client)

    # --- client actions ---------------------------------------------------------------

    def write_status(self, client: SimClient, entry: str, value: Any) -> None:
        root = _root_of(entry)
        client.edit([Write(root, entry, "status", value, client.view_epoch(root, entry))])

    def retry(self, client: SimClient, entry: str, status_first: bool = False) -> None:
        """Set the next epoch (a task's attempt, a shot's revision) and the bottom status
        in one transaction (in either order: the status struct's epoch is then not
        readable from the document's clocks)."""
        root = _root_of(entry)
        lattice = LATTICES[root]
        assert lattice.epoch_field is not None
        epoch = client.view_epoch(root, entry) + 1
        writes = [
            Write(root, entry, lattice.epoch_field, epoch, epoch),
            Write(root, entry, "status", lattice.bottom, epoch),
        ]
        client.edit(writes[::-1] if status_first else writes)

    def junk(self, client: SimClient, kind: int) -> None:
        """Edits that break the other rules (they must not disturb the lattices)."""
        doc = client.doc
        with doc.transaction():
            if kind == 0:
                doc.get("shots", type=Map)["S1"]["duration_s"] = "12"
            elif kind == 1:
                doc.get("shots", type=Map)["S1"]["title"] = 42
            elif kind == 2:
                doc.get("budget", type=Map)["total"] = 1e9
            elif kind == 3:
                doc.get("dna_bank", type=Map)["C1"] = {"name": "Ana", "version": "2"}
            elif kind == 4:
                doc.get("artifacts", type=Map)["no good id"] = Map({"key": "k"})
            else:
                doc.get("tasks", type=Map)["T1"]["lease_holder"] = client.name

    # --- the network --------------------------------------------------------------------

    def deliver_up(self, client: SimClient) -> None:
        if client.online and client.inflight and client.connection is not None:
            update, writes = client.inflight.popleft()
            self.room(client).receive(client.connection, sync_update(update))
            self.published += writes

    async def deliver_down(self, client: SimClient) -> bool:
        if not client.online or client.inflight or client.connection is None:
            return False
        await drained(client.connection)
        frames = client.channel.take()
        client.apply_remote(frames)
        return bool(frames)

    def go_offline(self, client: SimClient) -> None:
        if not client.online or client.connection is None:
            return
        self.room(client).leave(client.connection)
        client.connection.close(1000, "bye")
        client.online = False
        for _, writes in client.inflight:  # lost on the wire; they go in the rejoin diff
            client.unsent += writes
        client.inflight.clear()

    async def rejoin(self, client: SimClient) -> None:
        """y-websocket's handshake: the server's step 1 is answered with the client's
        difference; the client's step 1 with the server's."""
        if client.online:
            return
        client.connection = memory_connection(client.name)
        client.online = True
        room = self.room(client)
        room.join(client.connection)
        await drained(client.connection)
        for frame in client.channel.take():
            message = decode_message(frame)
            if isinstance(message, SyncMessage) and message.kind == SyncType.STEP1:
                diff = client.doc.get_update(message.payload)
                room.receive(client.connection, sync_step2(diff))
        last: dict[tuple[str, str, str], Write] = {}
        for w in client.unsent:
            last[(w.root, w.entry, w.name)] = w
        self.published += last.values()
        client.unsent = []
        room.receive(client.connection, sync_step1(client.doc.get_state()))

    def relay(self, instance: int) -> bool:
        """Deliver the oldest update instance `instance` accepted to the others."""
        peers = self.lives[instance].peers
        if peers is None or not peers.outbox:
            return False
        update, actor = peers.outbox.popleft()
        for n, live in enumerate(self.lives):
            if n != instance:
                live.room.apply_peer_update(update, actor)
        return True

    def relay_all(self) -> bool:
        moved = False
        while any([self.relay(n) for n in range(len(self.lives))]):
            moved = True
        return moved

    async def reload(self, instance: int) -> None:
        """Unload one instance's room (flush, compact) and load it again; its clients
        reconnect."""
        online = [c for c in self.clients if c.online and c.home == instance]
        for client in online:
            self.go_offline(client)
        await self.lives[instance].reload()
        for client in online:
            await self.rejoin(client)

    def deferred_checks_done(self) -> None:
        """Assert that no instance has a deferred check of a peer update left to run."""
        assert all(live.room.rules.next_deferred() is None for live in self.lives)

    async def settle(self) -> None:
        for client in self.clients:
            await self.rejoin(client)
        for _ in range(50):
            for client in self.clients:
                while client.inflight:
                    self.deliver_up(client)
            relayed = self.relay_all()
            await eventually(self.deferred_checks_done, interval=QUICK.peer_delay_s)
            moved = [await self.deliver_down(client) for client in self.clients]
            if not any(moved) and not relayed and not any(map(_pending, self.lives)):
                return
        raise AssertionError("the replicas kept exchanging updates")

    # --- the model ------------------------------------------------------------------------

    def expected_status(self, root: str, entry: str) -> tuple[Any, float]:
        lattice = LATTICES[root]
        writes = [w for w in self.published if w.root == root and w.entry == entry]
        epoch = max((float(w.value) for w in writes if w.name == lattice.epoch_field), default=0)
        statuses = [w.value for w in writes if w.name == "status" and w.epoch == epoch]
        # A retry restarts from the bottom until a status of its own is written.
        return _join(lattice, statuses) or lattice.bottom, epoch


LATTICES = {"tasks": TASK_STATUS, "shots": SHOT_STATUS}


def _root_of(entry: str) -> str:
    return "tasks" if entry in TASKS else "shots"


def _join(lattice: Lattice, values: list[Any]) -> Any:
    best = None
    for value in values:
        if isinstance(value, str):
            best = lattice.join(best, value)
    return best


client_ids = st.lists(st.integers(2, 2**40), min_size=3, max_size=3, unique=True)
entries = st.sampled_from(TASKS + SHOTS)
# Every status of both lattices, one unknown to both, and a wrong type.
statuses = st.sampled_from([*sorted({*TASK_STATUS.order, *SHOT_STATUS.order, "bogus"}), 7])
STEPS = [
    st.tuples(st.just("write"), st.integers(0, 2), entries, statuses),
    st.tuples(st.just("retry"), st.integers(0, 2), entries, st.booleans()),
    st.tuples(st.just("junk"), st.integers(0, 2), st.integers(0, 5)),
    st.tuples(st.just("up"), st.integers(0, 2)),
    st.tuples(st.just("down"), st.integers(0, 2)),
    st.tuples(st.just("offline"), st.integers(0, 2)),
    st.tuples(st.just("online"), st.integers(0, 2)),
]
actions = st.lists(st.one_of(STEPS), max_size=40)
actions_with_reloads = st.lists(st.one_of([*STEPS, st.tuples(st.just("reload"))]), max_size=40)
# Two instances: clients c0 and c2 on the first, c1 on the second.
INSTANCE_STEPS = [
    st.tuples(st.just("relay"), st.integers(0, 1)),  # one update to the other instance
    st.tuples(st.just("tick")),  # deferred checks of peer updates that are due run
    st.tuples(st.just("reload"), st.integers(0, 1)),
]
actions_on_instances = st.lists(st.one_of([*STEPS, *INSTANCE_STEPS]), max_size=50)
# Deferred checks of peer updates, short enough for many examples.
QUICK = RepairPolicy(owner_delay_s=0.001, peer_delay_s=0.003)
CLIENT_STEPS = {"write", "retry", "junk", "up", "down", "offline", "online"}


async def run_world(ids: list[int], steps: list[tuple[Any, ...]], instances: int = 1) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with linked_rooms(Path(data_dir), instances, repair=QUICK) as lives:
            world = World(lives, ids)
            await world.setup()
            for step in steps:
                await run_step(world, *step)
            await world.settle()
            check(world)


async def run_step(world: World, name: str, *args: Any) -> None:
    if name in CLIENT_STEPS:
        client, *rest = world.clients[args[0]], *args[1:]
        if name == "write":
            world.write_status(client, *rest)
        elif name == "retry":
            world.retry(client, *rest)
        elif name == "junk":
            world.junk(client, *rest)
        elif name == "up":
            world.deliver_up(client)
        elif name == "down":
            await world.deliver_down(client)
        elif name == "offline":
            world.go_offline(client)
        else:
            await world.rejoin(client)
    elif name == "relay":
        world.relay(*args)
    elif name == "tick":
        await asyncio.sleep(QUICK.peer_delay_s)  # a step of the model: time passes
    else:
        await world.reload(*(args or (0,)))


def _pending(live: LiveRoom) -> bool:
    """Whether an instance still has updates to relay or peer updates to check."""
    waiting = live.peers is not None and bool(live.peers.outbox)
    return waiting or live.room.rules.next_deferred() is not None


def check(world: World) -> None:
    server = doc_to_json(world.lives[0].room.doc)
    for live in world.lives[1:]:
        assert doc_to_json(live.room.doc) == server, "the instances diverged"
    for client in world.clients:
        assert doc_to_json(client.doc) == server, f"{client.name} diverged"
    for entry in TASKS + SHOTS:
        root = _root_of(entry)
        status, epoch = world.expected_status(root, entry)
        shown = server[root][entry]
        # A shot never reworked shows no revision: revision 0.
        assert shown.get(LATTICES[root].epoch_field, 0.0) == epoch, (entry, shown)
        assert shown["status"] == status, (entry, shown, world.published)
    # The other rules held too, on the same converged document.
    assert server["budget"]["total"] == 10.0
    assert "no good id" not in server["artifacts"]
    assert "lease_holder" not in server["tasks"]["T1"]
    s1 = server["shots"]["S1"]
    assert isinstance(s1["title"], str)
    assert isinstance(s1.get("duration_s", 0.0), float)
    dna = world.lives[0].room.doc.get("dna_bank", type=Map)
    assert all(isinstance(dna[key], Map) for key in dna.keys())


EXAMPLES = int(os.environ.get("BLACKBOARD_PROPERTY_EXAMPLES", "120"))
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SLOW_OK)
@given(ids=client_ids, steps=actions)
def test_concurrent_edits_converge_on_the_lattice_maximum(
    ids: list[int], steps: list[tuple[Any, ...]]
) -> None:
    asyncio.run(run_world(ids, steps))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SLOW_OK)
@given(ids=client_ids, steps=actions_with_reloads)
# Found by these tests: two concurrent retries, then a status on one of them, all sent
# after a reload; the server merges the lost `pending` and the `claimed` written over
# it into one deleted struct, and only the update as sent holds `claimed`.
@example(
    ids=[3, 2, 4],
    steps=[("retry", 0, "T1"), ("retry", 1, "T1"), ("write", 1, "T1", "claimed"), ("reload",)],
)
# Status and attempt writes that lost their races, sent along with a visible change of
# another field of the same task.
@example(
    ids=[2, 3, 4],
    steps=[
        ("retry", 1, "T1"),
        ("reload",),
        ("retry", 0, "T1"),
        ("retry", 0, "T1"),
        ("junk", 0, 5),
        ("offline", 0),
    ],
)
# A status written after a concurrent retry that lost, both sent after a reload.
@example(
    ids=[2, 3, 4],
    steps=[
        ("retry", 0, "T1"),
        ("retry", 1, "T1"),
        ("reload",),
        ("write", 0, "T1", "claimed"),
        ("reload",),
    ],
)
# A stale replica's status, based on a retry's `pending` that was then overwritten, sent
# after a reload: only the stored epoch of that `pending` says it counts for attempt 2.
@example(
    ids=[2, 3, 4],
    steps=[
        ("retry", 0, "T1", True),
        ("up", 0),
        ("down", 1),
        ("offline", 1),
        ("write", 2, "T1", "claimed"),
        ("up", 2),
        ("reload",),
        ("write", 1, "T1", "running"),
    ],
)
def test_replicas_converge_across_room_reloads(
    ids: list[int], steps: list[tuple[Any, ...]]
) -> None:
    """The same, with the room unloaded (compacted) and loaded again at random points:
    the stored status epochs let the reloaded room judge stale writes as before."""
    asyncio.run(run_world(ids, steps))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SLOW_OK)
@given(ids=client_ids, steps=actions_on_instances)
# Found by this test: instance 0 reloads between a status its client wrote (which wins
# the map race) and a retry on instance 1 (which makes it stale); the stored document
# shows the stale status, and only the stored record says it is below the maximum.
@example(
    ids=[3, 2, 4],
    steps=[
        ("write", 0, "T1", "claimed"),
        ("up", 0),
        ("offline", 1),
        ("retry", 1, "T1", False),
        ("online", 1),
        ("reload", 0),
    ],
)
# A shot rejected on one instance, reworked through the other, while a client of the
# first approves the rejected revision offline (its write wins the key: repaired).
@example(
    ids=[4, 3, 2],
    steps=[
        ("write", 0, "S1", "review"),
        ("write", 0, "S1", "rejected"),
        ("up", 0),
        ("up", 0),
        ("relay", 0),
        ("down", 1),
        ("offline", 0),
        ("retry", 1, "S1", True),
        ("up", 1),
        ("write", 0, "S1", "approved"),
        ("online", 0),
        ("relay", 1),
        ("relay", 0),
    ],
)
def test_replicas_converge_across_instances(ids: list[int], steps: list[tuple[Any, ...]]) -> None:
    """The same with two instances' rooms of the project, which see each other's updates
    late and in any interleaving (and may reload): every replica on either converges on
    one repaired document, and on the lattice maxima."""
    asyncio.run(run_world(ids, steps, instances=2))
