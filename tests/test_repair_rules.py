"""Well-formed updates that break the document rules are accepted, then repaired at once
by a server write, and each repair is recorded (DESIGN.md section 2, kind 3).

Driven through a real Room (SQLite store, group-commit log) in this process; clients are
pycrdt Docs whose updates go through `Room.apply_update` as an HTTP POST's would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map

from blackboard.persistence.clock import utc_now
from blackboard.persistence.corrections import CorrectionRecord, CorrectionStore
from blackboard.persistence.document_store import DocumentStore
from blackboard.schemas.views import doc_to_json
from blackboard.sync.room.origin import SERVER_ACTOR, Origin, Source
from blackboard.sync.rules import status_epochs
from blackboard.sync.rules.lattice import LatticeTracker, Target
from blackboard.sync.rules.repair_limit import RepairPolicy
from blackboard.sync.wire.protocol import sync_update
from tests.support.live_room import (
    LiveRoom,
    drained,
    linked_rooms,
    live_room,
    memory_connection,
)


class Replica:
    """A client's Doc; `send` hands what it wrote since the last send to the room."""

    def __init__(self, live: LiveRoom, client_id: int, actor: str = "agent") -> None:
        self.live = live
        self.doc = Doc(client_id=client_id)
        self.origin = Origin(Source.CLIENT, actor)
        self._updates: list[bytes] = []
        self._subscription = self.doc.observe(self._capture)
        self.pull()

    def _capture(self, event: Any) -> None:
        if event.transaction.origin() != hash("pull"):
            self._updates.append(event.update)

    def pull(self) -> None:
        with self.doc.transaction(origin="pull"):
            self.doc.apply_update(self.live.room.doc.get_update())

    def root(self, name: str) -> Map:
        return self.doc.get(name, type=Map)

    def take_updates(self) -> list[bytes]:
        """What this replica wrote since the last send (or take)."""
        updates, self._updates = self._updates, []
        return updates

    def send(self) -> asyncio.Future[int] | None:
        committed = None
        for update in self.take_updates():
            committed = self.live.room.apply_update(update, self.origin) or committed
        return committed


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveRoom]:
    async with live_room(tmp_path) as live:
        yield live


def shown(live: LiveRoom) -> dict[str, Any]:
    return doc_to_json(live.room.doc)


async def corrections(live: LiveRoom) -> list[CorrectionRecord]:
    await live.update_log.flush()
    await live.corrections.flush()
    return await live.corrections.store.page("film", None, 1000)


async def test_wrong_types_are_converted_when_lossless_else_removed(live: LiveRoom) -> None:
    agent = Replica(live, 7, actor="ana")
    with agent.doc.transaction():
        agent.root("shots")["S1"] = Map(
            {
                "title": 12,
                "duration_s": "12",
                "order": "first",
                "characters": ["c1", "c2"],
                "notes": None,
                "custom": {"kept": True},
            }
        )
        agent.root("spec")["fps"] = "24"
        agent.root("spec")["style"] = {"look": "noir"}
    committed = agent.send()
    assert committed is not None
    seq = await committed

    doc = shown(live)
    assert doc["shots"]["S1"] == {
        "title": "12",
        "duration_s": 12.0,
        "characters": ["c1", "c2"],
        "notes": None,
        "custom": {"kept": True},  # unknown fields are kept as they are
    }
    assert doc["spec"]["fps"] == 24.0
    assert isinstance(live.room.doc.get("shots", type=Map)["S1"]["characters"], Array)
    assert isinstance(live.room.doc.get("spec", type=Map)["style"], Map)
    found = sorted((c.path, c.before, c.after) for c in await corrections(live))
    assert found == sorted(
        [
            ("shots/S1/title", 12.0, "12"),
            ("shots/S1/duration_s", "12", 12.0),
            ("shots/S1/order", "first", None),
            ("shots/S1/characters", ["c1", "c2"], ["c1", "c2"]),
            ("spec/fps", "24", 24.0),
            ("spec/style", {"look": "noir"}, {"look": "noir"}),
        ]
    )
    records = await corrections(live)
    assert {(c.seq, c.actor, c.rule) for c in records} == {(seq, "ana", "wrong_type")}


async def test_a_plain_object_entry_becomes_a_map_with_its_fields(live: LiveRoom) -> None:
    agent = Replica(live, 7)
    agent.root("tasks")["T9"] = {"kind": "render", "attempt": "2", "depends_on": ["T1"]}
    agent.send()

    task = live.room.doc.get("tasks", type=Map)["T9"]
    assert isinstance(task, Map)
    assert isinstance(task["depends_on"], Array)
    assert task.to_py() == {"kind": "render", "attempt": 2.0, "depends_on": ["T1"]}
    found = {(c.path, c.rule) for c in await corrections(live)}
    assert found == {
        ("tasks/T9", "plain_entry"),
        ("tasks/T9/attempt", "wrong_type"),  # "2" -> 2
        ("tasks/T9/depends_on", "wrong_type"),  # a plain list -> an Array
    }
    # Two editors of that task now edit different fields of one Map: both win.
    other = Replica(live, 8)
    agent.pull()
    agent.root("tasks")["T9"]["result"] = {"frames": 24}
    other.root("tasks")["T9"]["error"] = None
    agent.send()
    other.send()
    assert shown(live)["tasks"]["T9"]["result"] == {"frames": 24}
    assert "error" in shown(live)["tasks"]["T9"]


async def test_an_entry_under_a_bad_id_is_removed_keeping_its_content(live: LiveRoom) -> None:
    agent = Replica(live, 7)
    agent.root("shots")["shot 1/a"] = Map({"title": "Opening", "duration_s": 4})
    agent.root("shots")["S2"] = "not a map"
    agent.send()

    assert shown(live)["shots"] == {}
    found = sorted((c.path, c.rule, c.before, c.after) for c in await corrections(live))
    assert found == [
        ("shots/S2", "wrong_type", "not a map", None),
        ("shots/shot 1~1a", "bad_id", {"title": "Opening", "duration_s": 4.0}, None),
    ]


async def test_client_writes_under_budget_get_the_true_value_back(live: LiveRoom) -> None:
    before = shown(live)["budget"]
    agent = Replica(live, 7)
    agent.root("budget")["total"] = 1e9
    agent.root("budget")["bonus"] = 5
    agent.send()
    assert shown(live)["budget"] == before

    # The server's own writes pass, and become the value clients are held to.
    live.room.server_write(lambda doc: doc.get("budget", type=Map).update({"total": 42.0}))
    assert shown(live)["budget"]["total"] == 42.0
    agent.pull()
    del agent.root("budget")["total"]
    agent.send()
    assert shown(live)["budget"]["total"] == 42.0
    rules = {(c.path, c.rule, c.after) for c in await corrections(live)}
    assert rules == {
        ("budget/total", "server_only", before["total"]),
        ("budget/bonus", "server_only", None),
        ("budget/total", "server_only", 42.0),
    }


async def test_lease_fields_are_written_by_the_server_alone(live: LiveRoom) -> None:
    agent = Replica(live, 7)
    agent.root("tasks")["T1"] = Map({"kind": "render", "lease_holder": "me"})
    agent.send()
    assert "lease_holder" not in shown(live)["tasks"]["T1"]

    live.room.server_write(
        lambda doc: doc.get("tasks", type=Map)["T1"].update({"lease_holder": "bot-3"})
    )
    agent.pull()
    agent.root("tasks")["T1"]["lease_holder"] = "me"
    agent.send()
    assert shown(live)["tasks"]["T1"]["lease_holder"] == "bot-3"


async def test_a_status_moving_backwards_gets_the_lattice_maximum(live: LiveRoom) -> None:
    agent = Replica(live, 7)
    agent.root("shots")["S1"] = Map({"status": "review"})
    agent.root("tasks")["T1"] = Map({"status": "running", "attempt": 1})
    agent.send()
    agent.root("shots")["S1"]["status"] = "planned"
    agent.root("tasks")["T1"]["status"] = "claimed"
    agent.send()
    assert shown(live)["shots"]["S1"]["status"] == "review"
    assert shown(live)["tasks"]["T1"] == {"status": "running", "attempt": 1.0}

    # `rejected` may replace `review` only: it stays against a move back to review, and
    # gives way to `approved`, which it may not replace.
    agent.pull()
    for status, expected in [
        ("rejected", "rejected"),
        ("review", "rejected"),
        ("approved", "approved"),
        ("rejected", "approved"),
    ]:
        agent.root("shots")["S1"]["status"] = status
        agent.send()
        agent.pull()
        assert shown(live)["shots"]["S1"]["status"] == expected
    lattice = [(c.path, c.before, c.after) for c in await corrections(live) if c.rule == "lattice"]
    assert lattice == [
        ("shots/S1/status", "planned", "review"),
        ("tasks/T1/status", "claimed", "running"),
        ("shots/S1/status", "review", "rejected"),
        ("shots/S1/status", "rejected", "approved"),
    ]


async def test_a_status_that_lost_a_concurrent_race_still_counts(live: LiveRoom) -> None:
    """Of two concurrent writes the higher client id wins the key whatever the order; the
    loser never shows in the Doc. The lattice still takes its value."""
    setup = Replica(live, 5)
    setup.root("tasks")["T1"] = Map({"status": "running", "attempt": 1})
    setup.send()
    winner, loser = Replica(live, 900), Replica(live, 10)
    winner.root("tasks")["T1"]["status"] = "done"
    loser.root("tasks")["T1"]["status"] = "failed"
    winner.send()
    loser.send()  # loses the key to `done`: only its bytes say `failed`
    assert shown(live)["tasks"]["T1"]["status"] == "failed"


async def test_a_retry_wins_outright_over_stale_offline_work(live: LiveRoom) -> None:
    setup = Replica(live, 5)
    setup.root("tasks")["T1"] = Map({"status": "pending", "attempt": 1})
    setup.send()
    stale = Replica(live, 900)  # will edit offline from here
    worker = Replica(live, 6)
    worker.root("tasks")["T1"]["status"] = "running"
    worker.send()
    with worker.doc.transaction():  # the lease expired: a retry
        worker.root("tasks")["T1"]["attempt"] = 2
        worker.root("tasks")["T1"]["status"] = "pending"
    worker.send()
    stale.root("tasks")["T1"]["status"] = "failed"  # still on attempt 1
    stale.send()
    assert shown(live)["tasks"]["T1"] == {"status": "pending", "attempt": 2.0}
    # Work on the retry counts.
    worker.pull()
    worker.root("tasks")["T1"]["status"] = "claimed"
    worker.send()
    assert shown(live)["tasks"]["T1"] == {"status": "claimed", "attempt": 2.0}


async def test_the_lattice_survives_a_reload(live: LiveRoom) -> None:
    setup = Replica(live, 5)
    setup.root("tasks")["T1"] = Map({"status": "pending", "attempt": 1})
    setup.root("shots")["S1"] = Map({"status": "generating"})
    setup.send()
    old_attempt = Replica(live, 900)  # offline from here, on attempt 1
    same_attempt = Replica(live, 901)
    worker = Replica(live, 6)
    with worker.doc.transaction():
        worker.root("tasks")["T1"]["attempt"] = 2
        worker.root("tasks")["T1"]["status"] = "pending"
    worker.send()
    same_attempt.pull()  # saw attempt 2, pending; then goes offline
    worker.root("tasks")["T1"]["status"] = "claimed"
    worker.send()
    await live.reload()

    old_attempt.root("tasks")["T1"]["status"] = "done"
    old_attempt.root("shots")["S1"]["status"] = "draft"
    old_attempt.send()
    assert shown(live)["tasks"]["T1"] == {"status": "claimed", "attempt": 2.0}
    assert shown(live)["shots"]["S1"]["status"] == "generating"
    same_attempt.root("tasks")["T1"]["status"] = "running"
    same_attempt.send()
    assert shown(live)["tasks"]["T1"] == {"status": "running", "attempt": 2.0}


async def test_a_reworked_shot_restarts_at_draft_and_wins_outright(live: LiveRoom) -> None:
    """A rejected shot cannot move on within its revision; a higher `revision` (a rework)
    restarts it at `draft`, and stale offline work on the old revision loses outright."""
    setup = Replica(live, 5)
    setup.root("shots")["S1"] = Map({"title": "Opening", "status": "review"})
    setup.send()
    stale = Replica(live, 900)  # will edit offline from here, on revision 0
    director = Replica(live, 6)
    director.root("shots")["S1"]["status"] = "rejected"
    director.send()
    director.root("shots")["S1"]["status"] = "generating"  # no rework without a revision
    director.send()
    assert shown(live)["shots"]["S1"]["status"] == "rejected"
    director.pull()
    with director.doc.transaction():  # the rework
        director.root("shots")["S1"]["revision"] = 1
        director.root("shots")["S1"]["status"] = "draft"
    director.send()
    stale.root("shots")["S1"]["status"] = "approved"  # still on revision 0: it loses
    stale.send()
    assert shown(live)["shots"]["S1"] == {"title": "Opening", "status": "draft", "revision": 1.0}
    # Work on the rework counts, up to a rejection of its own and past it.
    director.pull()
    for status in ("planned", "review", "approved"):
        director.root("shots")["S1"]["status"] = status
        director.send()
        assert shown(live)["shots"]["S1"]["status"] == status
    lattice = [(c.path, c.before, c.after) for c in await corrections(live) if c.rule == "lattice"]
    assert lattice == [
        ("shots/S1/status", "generating", "rejected"),
        ("shots/S1/status", "approved", "draft"),
    ]


async def test_a_revision_written_alone_or_after_the_status_restarts_the_shot(
    live: LiveRoom,
) -> None:
    """A rework that writes no status restarts at `draft` all the same (the server
    writes it); one that writes its status before the revision, in one transaction,
    counts that status for the new revision."""
    setup = Replica(live, 5)
    setup.root("shots")["S1"] = Map({"status": "rejected"})
    setup.root("shots")["S2"] = Map({"status": "rejected"})
    setup.send()
    editor = Replica(live, 6)
    editor.root("shots")["S1"]["revision"] = 1
    with editor.doc.transaction():
        editor.root("shots")["S2"]["status"] = "planned"
        editor.root("shots")["S2"]["revision"] = 1
    editor.send()
    assert shown(live)["shots"]["S1"] == {"status": "draft", "revision": 1.0}
    assert shown(live)["shots"]["S2"] == {"status": "planned", "revision": 1.0}
    # A revision that goes back down is repaired like any stale epoch.
    editor.pull()
    editor.root("shots")["S2"]["revision"] = 0
    editor.send()
    assert shown(live)["shots"]["S2"] == {"status": "planned", "revision": 1.0}
    lattice = [(c.path, c.before, c.after) for c in await corrections(live) if c.rule == "lattice"]
    assert lattice == [
        ("shots/S1/status", "rejected", "draft"),
        ("shots/S2/revision", 0.0, 1.0),
    ]


async def test_shot_revisions_survive_a_reload(live: LiveRoom) -> None:
    setup = Replica(live, 5)
    setup.root("shots")["S1"] = Map({"status": "rejected"})
    setup.send()
    old_revision = Replica(live, 900)  # offline from here, on revision 0
    same_revision = Replica(live, 901)
    director = Replica(live, 6)
    with director.doc.transaction():
        director.root("shots")["S1"]["revision"] = 1
        director.root("shots")["S1"]["status"] = "draft"
    director.send()
    same_revision.pull()  # saw revision 1, draft; then goes offline
    director.root("shots")["S1"]["status"] = "planned"
    director.send()
    await live.reload()

    old_revision.root("shots")["S1"]["status"] = "approved"
    old_revision.send()
    assert shown(live)["shots"]["S1"] == {"status": "planned", "revision": 1.0}
    # Its `draft` was overwritten before the reload: only the stored record says that a
    # status written on top of it counts for revision 1.
    same_revision.root("shots")["S1"]["status"] = "generating"
    same_revision.send()
    assert shown(live)["shots"]["S1"] == {"status": "generating", "revision": 1.0}


def test_records_written_before_shot_revisions_read_as_revision_zero() -> None:
    """A row stored before shots had a revision holds each shot-status write at epoch 0
    and no revision write: it loads as revision 0, the lost maximum included."""
    doc = Doc(client_id=7)
    doc.get("shots", type=Map)["S1"] = Map({"title": "s"})
    lost = Doc(client_id=5)  # a higher status that loses the race for the key
    lost.apply_update(doc.get_update())
    lost.get("shots", type=Map)["S1"]["status"] = "approved"
    doc.get("shots", type=Map)["S1"]["status"] = "review"
    doc.apply_update(lost.get_update(doc.get_state()))
    assert doc.get("shots", type=Map)["S1"]["status"] == "review"
    written = {7: "review", 5: "approved"}
    writes = [f for f in LatticeTracker().index(doc.get_update()) if f.key == "status"]
    assert sorted(f.item[0] for f in writes) == [5, 7]
    old_record = b"".join(
        status_epochs.encode_entry(
            status_epochs.Entry(*f.item, f.length, status_epochs.STATUS, 0.0, written[f.item[0]])
        )
        for f in writes
    )
    tracker = LatticeTracker.of_document(doc, old_record)
    assert tracker.target("shots", "S1") == Target("approved", 0.0)
    assert ("shots", "S1") in tracker.dirty  # it shows less than its maximum


async def test_a_status_shown_for_an_older_attempt_is_written_again(live: LiveRoom) -> None:
    """A retry's `pending` loses the key to a concurrent `pending` of the old attempt:
    the value is right but belongs to attempt 1, so the server writes it again, and the
    next status written on top of it counts for attempt 2."""
    setup = Replica(live, 5)
    setup.root("tasks")["T1"] = Map({"status": "claimed", "attempt": 1})
    setup.send()
    stale = Replica(live, 900)
    retry = Replica(live, 10)
    stale.root("tasks")["T1"]["status"] = "pending"  # a (backwards) write on attempt 1
    with retry.doc.transaction():
        retry.root("tasks")["T1"]["attempt"] = 2
        retry.root("tasks")["T1"]["status"] = "pending"
    retry.send()
    stale.send()  # wins the key with the same value, `pending`
    assert shown(live)["tasks"]["T1"] == {"status": "pending", "attempt": 2.0}
    worker = Replica(live, 11)
    worker.root("tasks")["T1"]["status"] = "running"
    worker.send()
    assert shown(live)["tasks"]["T1"] == {"status": "running", "attempt": 2.0}
    # The rewrite of an unchanged value is not listed as a correction.
    assert all(c.before != c.after for c in await corrections(live))


async def test_the_servers_own_writes_are_never_repaired(live: LiveRoom) -> None:
    def write(doc: Doc) -> None:
        doc.get("shots", type=Map)["S1"] = Map({"status": "approved", "duration_s": 3})
        doc.get("shots", type=Map)["S1"]["status"] = "draft"

    assert live.room.server_write(write) is not None
    assert shown(live)["shots"]["S1"]["status"] == "draft"
    assert await corrections(live) == []


@pytest.fixture
async def quick_peer_checks(tmp_path: Path) -> AsyncIterator[LiveRoom]:
    """A live room that checks other instances' updates after short delays."""
    policy = RepairPolicy(owner_delay_s=0.02, peer_delay_s=0.1)
    async with live_room(tmp_path, repair=policy) as live:
        yield live


async def test_another_instances_update_left_unrepaired_is_repaired_here_later(
    quick_peer_checks: LiveRoom,
) -> None:
    """Its instance should have repaired it (it crashed, say): after the delay, this one
    does; the budget another instance's server wrote is trusted."""
    live = quick_peer_checks
    peer = Replica(live, 7)
    peer.root("budget")["total"] = 77.0  # another instance's server wrote this
    live.room.apply_peer_update(peer.doc.get_update(live.room.doc.get_state()), SERVER_ACTOR)
    peer.root("shots")["S1"] = Map({"duration_s": "3"})  # and its client this
    live.room.apply_peer_update(peer.doc.get_update(live.room.doc.get_state()), "agent")
    assert shown(live)["shots"]["S1"]["duration_s"] == "3"  # its instance's repair may come
    await asyncio.sleep(0.3)
    assert shown(live)["budget"]["total"] == 77.0
    assert shown(live)["shots"]["S1"]["duration_s"] == 3.0
    assert [(c.path, c.rule) for c in await corrections(live)] == [
        ("shots/S1/duration_s", "wrong_type")
    ]
    client = Replica(live, 8)
    client.root("budget")["total"] = 1.0
    client.send()
    assert shown(live)["budget"]["total"] == 77.0


async def test_another_instances_update_repaired_there_is_not_repaired_again(
    quick_peer_checks: LiveRoom,
) -> None:
    live = quick_peer_checks
    peer = Replica(live, 7)
    before = live.room.doc.get_state()
    peer.root("shots")["S1"] = Map({"duration_s": "3", "status": "review"})
    live.room.apply_peer_update(peer.doc.get_update(before), "agent")
    peer.root("shots")["S1"]["status"] = "draft"  # backwards
    live.room.apply_peer_update(peer.doc.get_update(live.room.doc.get_state()), "agent")
    # Its instance repairs both (as the server: its writes arrive as a peer's too).
    server = Replica(live, 9)
    server.root("shots")["S1"]["duration_s"] = 3.0
    server.root("shots")["S1"]["status"] = "review"
    seq = live.room.seq
    live.room.apply_peer_update(server.doc.get_update(live.room.doc.get_state()), SERVER_ACTOR)
    await asyncio.sleep(0.3)
    assert shown(live)["shots"]["S1"] == {"duration_s": 3.0, "status": "review"}
    assert await corrections(live) == []
    await live.update_log.flush()
    assert live.room.seq == seq  # nothing written here


async def settled(lives: tuple[LiveRoom, ...]) -> None:
    """Relay every instance's updates to the others until none is left to relay or to
    check (each deferred check runs when due)."""
    for _ in range(100):
        moved = False
        for sender in lives:
            assert sender.peers is not None
            while sender.peers.outbox:
                update, actor = sender.peers.outbox.popleft()
                for receiver in lives:
                    if receiver is not sender:
                        receiver.room.apply_peer_update(update, actor)
                moved = True
        if not moved and all(live.room.rules.next_deferred() is None for live in lives):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the instances kept exchanging updates")


async def server_writes(live: LiveRoom) -> int:
    """How many log rows the server (of any instance) wrote."""
    await live.update_log.flush()
    return sum(e.actor == SERVER_ACTOR for e in await live.store.history("film", 0, 1000))


async def test_a_repair_over_a_status_of_another_epoch_counts_alike_everywhere(
    tmp_path: Path,
) -> None:
    """A repair that writes a status over one of an older revision writes the revision
    with it. Otherwise the other instance counts that status for the revision of the one
    it overwrote: it writes the status again itself (found by the two-process test), and
    judges writes based on it otherwise than the instance that repaired."""
    # Delays far apart: the owner's repair arrives before the other instance's check.
    policy = RepairPolicy(owner_delay_s=0.02, peer_delay_s=0.5)
    async with linked_rooms(tmp_path, 2, repair=policy) as (a, b):
        setup = Replica(a, 5)
        setup.root("shots")["S1"] = Map({"status": "rejected"})
        setup.send()
        await settled((a, b))
        rework, stale, late = Replica(a, 10), Replica(b, 20), Replica(b, 40)
        with rework.doc.transaction():
            rework.root("shots")["S1"]["revision"] = 1
            rework.root("shots")["S1"]["status"] = "draft"
        stale.root("shots")["S1"]["status"] = "approved"  # wins the key: repaired by b
        before = await server_writes(a)
        rework.send()
        stale.send()
        await settled((a, b))
        assert await server_writes(a) == before + 1  # once, by b
        seen, planner = Replica(b, 30), Replica(a, 31)  # both over the repair's `draft`
        planner.root("shots")["S1"]["status"] = "planned"
        planner.send()
        await settled((a, b))
        late.root("shots")["S1"]["status"] = "generating"  # on revision 0: repaired
        late.send()
        await settled((a, b))
        seen.root("shots")["S1"]["status"] = "review"  # loses the key: repaired
        seen.send()
        await settled((a, b))
        for live in (a, b):
            assert shown(live)["shots"]["S1"] == {"status": "review", "revision": 1.0}
        repairs = [(c.path, c.before, c.after) for c in await corrections(a)]
        assert repairs == [
            ("shots/S1/status", "approved", "draft"),
            ("shots/S1/status", "generating", "planned"),
            ("shots/S1/status", "planned", "review"),
        ]


async def test_instances_that_disagree_stop_fighting_over_a_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Were two instances' lattices ever to disagree, each would repair the other's
    repair without end; past the bound they leave that path alone and log why."""
    policy = RepairPolicy(
        max_repaired_updates=5, window_s=60, owner_delay_s=0.001, peer_delay_s=0.002
    )
    async with linked_rooms(tmp_path, 2, repair=policy) as (a, b):
        # A bug we cannot cause otherwise: b's tracker wants S1 back at `planned`.
        lattice = b.room.rules.lattice
        real_target = lattice.target
        lattice.target = lambda root, key: (  # type: ignore[method-assign]
            Target("planned", None) if key == "S1" else real_target(root, key)
        )
        agent = Replica(a, 7)
        agent.root("shots")["S1"] = Map({"title": "one", "status": "approved"})
        agent.send()
        for _ in range(100):
            for sender, receiver in ((a, b), (b, a)):
                assert sender.peers is not None
                while sender.peers.outbox:
                    receiver.room.apply_peer_update(*sender.peers.outbox.popleft())
            await asyncio.sleep(0.004)
        repairs = [c for c in await corrections(a) if c.path == "shots/S1/status"]
        assert len(repairs) == 2 * policy.max_repaired_updates
        assert "left alone (do the instances disagree?)" in caplog.text


async def test_a_client_that_keeps_needing_repairs_is_closed(tmp_path: Path) -> None:
    policy = RepairPolicy(max_repaired_updates=5, window_s=60)
    async with live_room(tmp_path, repair=policy) as live:
        connection = memory_connection("looper")
        live.room.join(connection)
        bot = Replica(live, 7)
        for i in range(6):  # a client fighting the server: it writes the wrong type again
            bot.root("shots")["S1"] = Map({"duration_s": f"{i}"})
            for update in bot.take_updates():
                live.room.receive(connection, sync_update(update))
        await drained(connection)
        await asyncio.wait_for(connection.closed.wait(), 5)
        assert connection.channel.closed is not None
        assert connection.channel.closed[0] == 4429
        assert shown(live)["shots"]["S1"]["duration_s"] == 5.0  # still repaired, converged


async def test_the_corrections_store_pages_on_both_backends(store: DocumentStore) -> None:
    await store.create_project("film", "film", b"\x00\x00", "setup")
    corrections = CorrectionStore(store.db)
    now = utc_now()
    rows = [
        CorrectionRecord("film", seq, n, "ana", f"shots/S{seq}", "wrong_type", "1", 1.0, now)
        for seq in (3, 5)
        for n in (0, 1)
    ]
    await corrections.add(rows)
    await corrections.add(rows[:1])  # a retried batch adds nothing twice
    first = await corrections.page("film", None, 3)
    assert [(r.seq, r.n) for r in first] == [(3, 0), (3, 1), (5, 0)]
    assert first[0].before == "1" and first[0].after == 1.0
    rest = await corrections.page("film", (5, 0), 3)
    assert [(r.seq, r.n) for r in rest] == [(5, 1)]
    assert await corrections.page("other", None, 3) == []


def test_a_damaged_lattice_record_is_logged_and_the_document_still_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = Doc()
    doc.get("tasks", type=Map)["T1"] = Map({"status": "running", "attempt": 2})
    tracker = LatticeTracker.of_document(doc, b"\x05\x01\x01\x09")  # kind 9: unknown
    assert "the stored lattice record is damaged" in caplog.text
    target = tracker.target("tasks", "T1")  # from the shown values, as before records
    assert target is not None and (target.status, target.epoch) == ("running", 2.0)


async def test_another_instances_client_value_under_budget_is_not_taken_for_the_truth(
    live: LiveRoom,
) -> None:
    """Found by the two-instance property test: a client's budget write relayed from
    another instance was learned as the server's value, so the same write by a client
    here went unrepaired."""
    truth = shown(live)["budget"]["total"]
    elsewhere = Replica(live, 7)
    elsewhere.root("budget")["total"] = 1e9
    live.room.apply_peer_update(elsewhere.doc.get_update(live.room.doc.get_state()), "agent")
    here = Replica(live, 8)
    here.root("budget")["total"] = 1e9
    here.send()
    assert shown(live)["budget"]["total"] == truth
