"""Several server processes sharing one Postgres database and Redis (DESIGN.md section 3):
clients on any instance see every edit, presence is global, and an instance that missed
Redis messages (killed, paused, Redis restarted or down) catches up from the log."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from pycrdt import Doc, Map

from blackboard.persistence.clock import utc_now
from blackboard.persistence.compaction import compaction_fence
from blackboard.persistence.factory import make_store
from blackboard.persistence.fence import Fences
from blackboard.persistence.replay import replay
from blackboard.sync.client import Session
from blackboard.sync.wire import peer_messages
from tests.support.api import create_project, eventually, project_json
from tests.support.auth import until_closed
from tests.support.awareness import joined, seen, states_message
from tests.support.backends import REDIS_URL, redis_prefix
from tests.support.js import JsClients
from tests.support.private_redis import PrivateRedis
from tests.support.server import ServerProcess, StartServer

Cluster = Callable[..., Awaitable[list[ServerProcess]]]


@pytest.fixture
def prefix() -> str:
    return redis_prefix()


@pytest.fixture
def cluster(pg_url: str, start_server: StartServer, prefix: str) -> Cluster:
    """`cluster(n, redis_url=..., **env)`: n instances on one database and one Redis (the
    servers stop before the database is dropped)."""

    async def start(count: int, redis_url: str = REDIS_URL, **env: str) -> list[ServerProcess]:
        base = {
            "BLACKBOARD_DATABASE_URL": pg_url,
            "BLACKBOARD_REDIS_URL": redis_url,
            "BLACKBOARD_REDIS_PREFIX": prefix,
            "BLACKBOARD_CATCHUP_CHECK_S": "1",
            "BLACKBOARD_CATCHUP_POLL_S": "0.25",
            "BLACKBOARD_INSTANCE_TTL_S": "3",
            "BLACKBOARD_REDIS_TIMEOUT_S": "1",
        }
        return [await start_server(env={**base, **env}) for _ in range(count)]

    return start


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = await PrivateRedis().start()
    try:
        yield server
    finally:
        await server.kill()


class ChannelTap:
    """Counts the peer messages published on one project's channel, by kind."""

    def __init__(self, pubsub: Any) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._pubsub = pubsub
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, redis_url: str, channel: str) -> ChannelTap:
        pubsub = aioredis.Redis.from_url(redis_url).pubsub()
        await pubsub.subscribe(channel)
        while (await pubsub.get_message(timeout=5))["type"] != "subscribe":
            pass
        return cls(pubsub)

    async def _read(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] == "message":
                self.counts[chr(peer_messages.decode(message["data"]).kind)] += 1

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._pubsub.aclose()


async def http_get(server: ServerProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        return await http.get(path)


async def same_document(servers: list[ServerProcess], project_id: str) -> dict:
    """Every instance serves the same document; returns it."""
    docs = [(await project_json(s, project_id))["doc"] for s in servers]
    for doc in docs[1:]:
        assert doc == docs[0]
    return docs[0]


def shot(index: int) -> str:
    return f"S{index:03d}"


async def test_edits_on_every_instance_reach_every_client_one_message_each(
    cluster: Cluster, js: JsClients, prefix: str
) -> None:
    a, b = await cluster(2)
    await create_project(a, "film")
    tap = await ChannelTap.open(REDIS_URL, f"{prefix}doc:film")
    await js.connect("on_a", a.ws, "film")
    await js.connect("on_b", b.ws, "film")
    agent = Session(b.ws, "film")
    await agent.connect()
    await asyncio.sleep(0.5)  # a window for stray publishes before the baseline (no event)
    baseline = tap.counts["u"]

    expected: dict[str, dict[str, Any]] = {}
    for i in range(10):
        writer = "on_a" if i % 2 == 0 else "on_b"
        await js.call("set", name=writer, path=["shots", shot(i)], value={"title": f"t{i}"})
        expected[shot(i)] = {"title": f"t{i}"}
    for i in range(10, 15):
        with agent.doc.transaction():
            agent.doc.get("shots", type=Map)[shot(i)] = Map({"title": f"t{i}"})
        expected[shot(i)] = {"title": f"t{i}"}
    await agent.flush()

    for name in ("on_a", "on_b"):
        await js.call("waitFor", name=name, path=["shots"], value=expected)
    await eventually(lambda: _equal(agent.doc.get("shots", type=Map).to_py(), expected))
    assert (await same_document([a, b], "film"))["shots"] == expected

    # One Redis message per update, whichever instance took it.
    await eventually(lambda: _equal(tap.counts["u"] - baseline, 15))
    # A late joiner syncs (server step 2 and its own empty step 2): nothing is published.
    await js.connect("late", a.ws, "film")
    await js.call("waitFor", name="late", path=["shots"], value=expected)
    await asyncio.sleep(0.5)  # a window for a wrongful publish (nothing to wait for)
    assert tap.counts["u"] - baseline == 15
    # Each update was received, and its Redis lag measured, by the one other instance.
    received = [(await _metrics(s))["blackboard_redis_lag_seconds_count"] for s in (a, b)]
    assert sum(received) == 15
    await agent.close()
    await tap.close()


async def test_presence_is_global(cluster: Cluster, js: JsClients) -> None:
    a, b = await cluster(2)
    await create_project(a, "pres")
    await js.connect("ana", a.ws, "pres")
    await js.connect("bo", b.ws, "pres")
    await js.connect("cy", b.ws, "pres")
    await js.call("setAwareness", name="ana", state={"user": "ana", "shot": "S03"})
    await js.call("setAwareness", name="bo", state={"user": "bo"})

    async def everyone_sees_everyone() -> None:
        assert {"user": "ana", "shot": "S03"} in (await js.call("awareness", name="bo")).values()
        assert {"user": "ana", "shot": "S03"} in (await js.call("awareness", name="cy")).values()
        assert {"user": "bo"} in (await js.call("awareness", name="ana")).values()

    await eventually(everyone_sees_everyone)

    async def listing_shows_both_instances(server: ServerProcess) -> None:
        body = (await http_get(server, "/api/projects/pres/presence")).json()
        assert body["complete"] and body["connections"] == 3
        per_instance = sorted(i["connections"] for i in body["instances"])
        assert per_instance == [1, 2]
        states = [c["state"] for i in body["instances"] for c in i["clients"]]
        assert {"user": "ana", "shot": "S03"} in states and {"user": "bo"} in states

    for server in (a, b):
        await eventually(lambda s=server: listing_shows_both_instances(s))

    # ana's socket closes: her state is removed on the other instance too, within a second.
    await js.call("destroy", name="ana")

    async def ana_gone() -> None:
        for name in ("bo", "cy"):
            assert {"user": "ana", "shot": "S03"} not in (
                await js.call("awareness", name=name)
            ).values()

    await eventually(ana_gone, timeout=1.5)

    async def listing_without_ana() -> None:
        body = (await http_get(b, "/api/projects/pres/presence")).json()
        assert [i["connections"] for i in body["instances"]] == [2]

    await eventually(listing_without_ana)
    unknown = await http_get(a, "/api/projects/nope/presence")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"


async def test_dead_instance_disappears_from_presence(cluster: Cluster, js: JsClients) -> None:
    a, b = await cluster(2)
    await create_project(a, "crash")
    await js.connect("on_a", a.ws, "crash")
    await js.connect("on_b", b.ws, "crash")
    await js.call("setAwareness", name="on_b", state={"user": "bo"})
    await eventually(lambda: _has_state(js, "on_a", {"user": "bo"}, present=True))
    await b.kill()  # no goodbye: its presence entry and bo's state must expire by themselves
    await eventually(lambda: _has_state(js, "on_a", {"user": "bo"}, present=False), timeout=10)

    async def only_a_listed() -> None:
        body = (await http_get(a, "/api/projects/crash/presence")).json()
        assert [i["connections"] for i in body["instances"]] == [1]

    await eventually(only_a_listed, timeout=10)


async def test_killed_instance_restarts_and_catches_up(cluster: Cluster, js: JsClients) -> None:
    a, b = await cluster(2)
    await create_project(a, "kill")
    await js.connect("on_a", a.ws, "kill")
    await js.connect("on_b", b.ws, "kill")
    await js.call("set", name="on_b", path=["shots", "S1"], value={"title": "before"})
    await js.call("waitFor", name="on_a", path=["shots", "S1", "title"], value="before")

    await b.kill()
    # Edits while b is gone: on a, and offline on b's client.
    for i in range(20):
        await js.call("set", name="on_a", path=["tasks", f"T{i}"], value={"kind": "render"})
    await js.call("set", name="on_b", path=["shots", "S2"], value={"title": "offline"})
    await b.restart()

    expected_tasks = {f"T{i}": {"kind": "render"} for i in range(20)}
    expected_shots = {"S1": {"title": "before"}, "S2": {"title": "offline"}}
    for name in ("on_a", "on_b"):  # the stock client reconnects to b by itself
        await js.call("waitFor", name=name, path=["tasks"], value=expected_tasks, timeoutMs=15000)
        await js.call("waitFor", name=name, path=["shots"], value=expected_shots, timeoutMs=15000)
    doc = await same_document([a, b], "kill")
    assert doc["tasks"] == expected_tasks and doc["shots"] == expected_shots

    # An instance that starts with no clients and then gets one serves everything.
    (c,) = await cluster(1)
    fresh = Session(c.ws, "kill")
    await fresh.connect()
    assert fresh.doc.get("tasks", type=Map).to_py() == expected_tasks
    assert fresh.doc.get("shots", type=Map).to_py() == expected_shots
    await fresh.close()


async def test_paused_instance_that_missed_messages_converges_from_the_log(
    cluster: Cluster, js: JsClients, private_redis: PrivateRedis
) -> None:
    a, b = await cluster(2, redis_url=private_redis.url)
    await create_project(a, "pause")
    await js.connect("on_b", b.ws, "pause")
    writer = Session(a.ws, "pause")
    await writer.connect()
    with writer.doc.transaction():
        writer.doc.get("spec", type=Map)["logline"] = "noir"
    await js.call("waitFor", name="on_b", path=["spec", "logline"], value="noir")

    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        # Redis restarts while b sleeps: a resubscribes, b cannot, so every message
        # published from now on is lost for b; only the log has them.
        await private_redis.restart()
        await eventually(lambda: _redis_ok(a), timeout=10)
        notes = writer.doc.get("dna_bank", type=Map)
        for i in range(100):
            with writer.doc.transaction():
                notes[f"C{i}"] = Map({"description": f"character {i}"})
        await writer.flush()
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)

    expected = writer.doc.get("dna_bank", type=Map).to_py()
    # Within seconds of waking up, b's document and its client have everything.
    await eventually(lambda: _same_roots(b, "pause", "dna_bank", expected), timeout=5)
    await js.call("waitFor", name="on_b", path=["dna_bank"], value=expected, timeoutMs=5000)
    await same_document([a, b], "pause")
    assert "falling back to polling the log" in b.logs()  # b did notice the lost link
    await writer.close()


async def test_redis_down_falls_back_to_the_log_and_recovers(
    cluster: Cluster, js: JsClients, private_redis: PrivateRedis
) -> None:
    a, b = await cluster(2, redis_url=private_redis.url)
    await create_project(a, "outage")
    await js.connect("on_a", a.ws, "outage")
    await js.connect("on_b", b.ws, "outage")
    await js.call("set", name="on_a", path=["shots", "S0"], value={"title": "fast path"})
    await js.call("waitFor", name="on_b", path=["shots", "S0", "title"], value="fast path")
    for server in (a, b):
        ready = await http_get(server, "/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"

    await private_redis.kill()

    async def degraded(server: ServerProcess) -> None:
        ready = await http_get(server, "/readyz")
        body = ready.json()
        assert ready.status_code == 200, body  # each instance still serves its clients
        assert body["status"] == "degraded" and body["checks"]["redis"].startswith("down")

    for server in (a, b):
        await eventually(lambda s=server: degraded(s), timeout=10)

    # Presence set meanwhile reaches the other instance once Redis is back (below).
    await js.call("setAwareness", name="on_a", state={"user": "ana", "during": "outage"})
    # Edits on both sides keep flowing between instances through the log.
    for i in range(1, 6):
        await js.call("set", name="on_a", path=["shots", f"S{i}"], value={"title": f"a{i}"})
        await js.call("set", name="on_b", path=["tasks", f"T{i}"], value={"kind": f"b{i}"})
    await js.call("waitFor", name="on_b", path=["shots", "S5", "title"], value="a5")
    await js.call("waitFor", name="on_a", path=["tasks", "T5", "kind"], value="b5")
    for server in (a, b):  # they came from the log: Redis carried none of them
        metrics = await _metrics(server)
        assert metrics["blackboard_redis_up"] == 0
        assert metrics["blackboard_peer_updates_caught_up_total"] >= 5

    await private_redis.start()
    for server in (a, b):
        await eventually(
            lambda s=server: _redis_ok(s),  # reconnects by itself
            timeout=10,
        )
    # Instances re-announce their clients' presence on reconnect (well before the 15 s
    # in which a stock client would repeat it by itself).
    await eventually(
        lambda: _has_state(js, "on_b", {"user": "ana", "during": "outage"}, present=True),
        timeout=5,
    )
    await js.call("set", name="on_b", path=["shots", "S9"], value={"title": "back"})
    await js.call("waitFor", name="on_a", path=["shots", "S9", "title"], value="back")
    doc = await same_document([a, b], "outage")
    assert len(doc["shots"]) == 7 and len(doc["tasks"]) == 5  # nothing lost


async def test_update_of_an_instance_that_died_before_commit_is_stored_by_a_peer(
    cluster: Cluster, js: JsClients, pg_url: str
) -> None:
    # Both named alike (as a deployment restarting one container might): the instance
    # that replaces the dead one must not be taken for it.
    a, b = await cluster(2, BLACKBOARD_INSTANCE_ID="node")
    await create_project(a, "orphan")
    await js.connect("on_a", a.ws, "orphan")
    await js.connect("on_b", b.ws, "orphan")
    await js.call("set", name="on_a", path=["shots", "S1"], value={"title": "stored"})
    await js.call("waitFor", name="on_b", path=["shots", "S1", "title"], value="stored")

    # The database stalls (a lock on the log), so a cannot commit what it accepts now...
    blocker = await asyncpg.connect(pg_url)
    stall = blocker.transaction()
    await stall.start()
    await blocker.execute("LOCK TABLE doc_updates IN EXCLUSIVE MODE")
    try:
        await js.call("set", name="on_a", path=["shots", "S2"], value={"title": "orphan"})
        # ...yet b got it through Redis, before any commit.
        await js.call("waitFor", name="on_b", path=["shots", "S2", "title"], value="orphan")
        waiting: list[int] = []

        async def a_is_committing() -> None:
            waiting[:] = (
                await blocker.fetchval(
                    "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                or []
            )
            assert len(waiting) == 1

        await eventually(a_is_committing)
        await js.call("destroy", name="on_a")
        await a.kill()  # a dies with the update uncommitted, and its statement is cancelled:
        await blocker.execute("SELECT pg_terminate_backend($1)", waiting[0])  # only b has it
    finally:
        await stall.rollback()
        await blocker.close()
    await a.restart()  # at once, under the same name

    async def stored_in_the_log() -> None:
        store = make_store(pg_url, a.data_dir)
        await store.open(migrate_schema=False)
        try:
            stored = await store.load("orphan")
        finally:
            await store.close()
        shots = replay(stored).get("shots", type=Map).to_py()
        assert shots == {"S1": {"title": "stored"}, "S2": {"title": "orphan"}}

    await eventually(stored_in_the_log, timeout=15)
    # A fresh instance (nothing in memory) serves it from the database.
    (c,) = await cluster(1)
    assert (await project_json(c, "orphan"))["doc"]["shots"]["S2"] == {"title": "orphan"}


async def test_a_compaction_fence_held_elsewhere_stops_every_instance_compacting(
    cluster: Cluster, pg_url: str
) -> None:
    a, b = await cluster(2, BLACKBOARD_COMPACT_AFTER_ROWS="10")
    await create_project(a, "compact")
    other_instance = make_store(pg_url, a.data_dir)
    await other_instance.open(migrate_schema=False)
    writers = [Session(s.ws, "compact") for s in (a, b)]
    try:
        held = await Fences(other_instance.db, "other-instance").acquire(
            compaction_fence("compact"), timedelta(seconds=4)
        )
        assert held is not None
        for w in writers:
            await w.connect()
        for round_ in range(3):
            for i, w in enumerate(writers):
                for j in range(15):
                    with w.doc.transaction():
                        w.doc.get("tasks", type=Map)[f"T{round_}-{i}-{j}"] = Map({"kind": "k"})
                await w.flush()
        # Both instances passed their threshold, yet neither compacted: the fence is held.
        assert await _snapshot_count(other_instance, "compact") == 0
        # The fence expires: the next instance to pass its threshold takes it.
        await eventually(lambda: _fence_expired(other_instance, compaction_fence("compact")))
        for w in writers:
            for j in range(15):
                with w.doc.transaction():
                    w.doc.get("tasks", type=Map)[f"late-{id(w)}-{j}"] = Map({"kind": "k"})
            await w.flush()
        await eventually(lambda: _snapshot_count_at_least(other_instance, "compact", 1), timeout=10)
        doc = await same_document([a, b], "compact")
        assert len(doc["tasks"]) == 3 * 2 * 15 + 2 * 15
    finally:
        for w in writers:
            await w.close()
        await other_instance.close()


# --- helpers ---------------------------------------------------------------------


def _equal(actual: object, expected: object) -> None:
    assert actual == expected


async def _has_state(js: JsClients, name: str, state: dict, *, present: bool) -> None:
    assert (state in (await js.call("awareness", name=name)).values()) == present


async def _same_roots(server: ServerProcess, project_id: str, root: str, expected: dict) -> None:
    assert (await project_json(server, project_id))["doc"][root] == expected


async def _redis_ok(server: ServerProcess) -> None:
    body = (await http_get(server, "/readyz")).json()
    assert body["status"] == "ready" and body["checks"]["redis"] == "ok"


async def _metrics(server: ServerProcess) -> dict[str, float]:
    text = (await http_get(server, "/metrics")).text
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith("blackboard_") and "{" not in name
    }


async def _snapshot_count(store: Any, project_id: str) -> int:
    return await store.db.fetchval(
        "SELECT count(*) FROM doc_snapshots WHERE project_id = $1", project_id
    )


async def _fence_expired(store: Any, name: str) -> None:
    held = await store.db.fetchval(
        "SELECT count(*) FROM work_fences WHERE name = $1 AND expires_at > $2", name, utc_now()
    )
    assert held == 0, f"fence {name} still held"


async def _snapshot_count_at_least(store: Any, project_id: str, n: int) -> None:
    assert await _snapshot_count(store, project_id) >= n


async def post_update(server: ServerProcess, project_id: str, update: bytes) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.post(f"/api/projects/{project_id}/update", content=update)
        assert response.status_code == 200, response.text


async def corrections_of(server: ServerProcess, project_id: str) -> list[tuple[str, str, Any]]:
    response = await http_get(server, f"/api/projects/{project_id}/corrections?limit=1000")
    assert response.status_code == 200, response.text
    return sorted((c["path"], c["rule"], c["after"]) for c in response.json()["items"])


async def test_each_repair_is_made_and_recorded_once_across_instances(cluster: Cluster) -> None:
    """The instance that accepted a bad update repairs it; the other, which applies the
    update too, finds the repair arriving and does nothing. A break only two concurrent
    updates on two instances make (a higher status losing the map race to a lower one)
    is repaired once as well."""
    a, b = await cluster(2)
    await create_project(a, "once")
    base = Doc(client_id=5)
    with base.transaction():
        base.get("shots", type=Map)["S1"] = Map({"title": "s"})
        base.get("tasks", type=Map)["T1"] = Map({"status": "pending", "attempt": 1})
    await post_update(a, "once", base.get_update())
    for server in (a, b):  # both instances have the room loaded
        await eventually(lambda s=server: _has_task(s))

    # A wrong type, written through a.
    typo = Doc(client_id=7)
    typo.apply_update(base.get_update())
    typo.get("shots", type=Map)["S1"]["duration_s"] = "12"
    await post_update(a, "once", typo.get_update(base.get_state()))
    # Two concurrent status writes through a and b: the higher client id (b's `claimed`)
    # wins the map key, the lattice maximum is a's `done`.
    done, claimed = Doc(client_id=10), Doc(client_id=20)
    for doc, status in ((done, "done"), (claimed, "claimed")):
        doc.apply_update(base.get_update())
        doc.get("tasks", type=Map)["T1"]["status"] = status
    await asyncio.gather(
        post_update(a, "once", done.get_update(base.get_state())),
        post_update(b, "once", claimed.get_update(base.get_state())),
    )

    async def repaired() -> None:
        doc = await same_document([a, b], "once")
        assert doc["shots"]["S1"]["duration_s"] == 12.0
        assert doc["tasks"]["T1"]["status"] == "done"

    await eventually(repaired)
    # Past every deferred check of a peer's update, none of which may undo the repair
    # (the checks run inside the servers: nothing to wait for).
    await asyncio.sleep(1.5)
    await repaired()
    expected = [
        ("shots/S1/duration_s", "wrong_type", 12.0),
        ("tasks/T1/status", "lattice", "done"),
    ]
    assert await corrections_of(a, "once") == expected
    assert await corrections_of(b, "once") == expected


async def _has_task(server: ServerProcess) -> None:
    assert "T1" in (await project_json(server, "once"))["doc"]["tasks"]


async def document_update(server: ServerProcess, project_id: str) -> bytes:
    response = await http_get(server, f"/api/projects/{project_id}/update")
    assert response.status_code == 200, response.text
    return response.content


async def test_a_shot_reworked_on_one_instance_wins_over_stale_work_on_another(
    cluster: Cluster,
) -> None:
    """A rework (a higher `revision`) through a and a stale `approved` of the rejected
    shot through b, concurrent: both instances restart the shot at `draft`, and the
    repair is made and recorded once. Restarted, b judges stale writes from the stored
    lattice record exactly as before."""
    a, b = await cluster(2)
    await create_project(a, "rework")
    base = Doc(client_id=5)
    base.get("shots", type=Map)["S1"] = Map({"title": "s", "status": "rejected"})
    await post_update(a, "rework", base.get_update())
    for server in (a, b):
        await eventually(lambda s=server: _has_shot(s))
    rework, stale = Doc(client_id=10), Doc(client_id=20)  # the stale write wins the key
    for doc in (rework, stale):
        doc.apply_update(base.get_update())
    with rework.transaction():
        rework.get("shots", type=Map)["S1"]["revision"] = 1
        rework.get("shots", type=Map)["S1"]["status"] = "draft"
    stale.get("shots", type=Map)["S1"]["status"] = "approved"
    await asyncio.gather(
        post_update(a, "rework", rework.get_update(base.get_state())),
        post_update(b, "rework", stale.get_update(base.get_state())),
    )

    async def shows(status: str) -> None:
        doc = await same_document([a, b], "rework")
        assert doc["shots"]["S1"] == {"title": "s", "status": status, "revision": 1.0}

    await eventually(lambda: shows("draft"))
    await asyncio.sleep(1.5)  # past every deferred check of a peer's update (see above)
    await shows("draft")
    viewer = Doc(client_id=30)  # saw the rework's `draft`; edits offline from here
    viewer.apply_update(await document_update(a, "rework"))
    planner = Doc(client_id=31)
    planner.apply_update(viewer.get_update())
    planner.get("shots", type=Map)["S1"]["status"] = "planned"
    await post_update(a, "rework", planner.get_update(viewer.get_state()))
    await eventually(lambda: shows("planned"))

    await b.stop()
    await b.restart()
    late = Doc(client_id=40)  # still on revision 0
    late.apply_update(base.get_update())
    late.get("shots", type=Map)["S1"]["status"] = "generating"
    await post_update(b, "rework", late.get_update(base.get_state()))
    await eventually(lambda: shows("planned"))
    # Concurrent with `planned` and losing the key to it, over the repair's `draft`,
    # written before b restarted: only the stored record says that it counts for
    # revision 1. (Before repairs wrote the epoch with the status, a took that `draft`
    # for revision 0, and the two instances fought over this status.)
    before = viewer.get_state()
    viewer.get("shots", type=Map)["S1"]["status"] = "review"
    await post_update(b, "rework", viewer.get_update(before))
    await eventually(lambda: shows("review"))
    await asyncio.sleep(1.5)  # past every deferred check of a peer's update (see above)
    await shows("review")
    expected = [
        ("shots/S1/status", "lattice", "draft"),
        ("shots/S1/status", "lattice", "planned"),
        ("shots/S1/status", "lattice", "review"),
    ]
    assert await corrections_of(a, "rework") == expected
    assert await corrections_of(b, "rework") == expected


async def _has_shot(server: ServerProcess) -> None:
    assert "S1" in (await project_json(server, "rework"))["doc"]["shots"]


async def test_presence_bounds_hold_across_instances(cluster: Cluster) -> None:
    """A flood refused on one instance reaches no other; an instance keeps its own cap on
    the states its peers relay."""
    [a] = await cluster(1, BLACKBOARD_MAX_AWARENESS_STATES_PER_ROOM="10")
    [b] = await cluster(1, BLACKBOARD_MAX_AWARENESS_STATES_PER_ROOM="3")
    await create_project(a, "pres")
    watcher = await joined(b, "pres")
    await seen(watcher)
    flooder = await joined(a, "pres")
    await flooder.send(states_message(*((i, 1, {"flood": i}) for i in range(100, 10_100))))
    assert (await until_closed(flooder))[0] == 4400
    assert await seen(watcher, quiet_s=1.5) == {}
    owners = [await joined(a, "pres") for _ in range(5)]
    for n, ws in enumerate(owners, start=1):
        await ws.send(states_message((n, 1, {"user": n})))
    found: dict[int, str] = {}
    deadline = asyncio.get_running_loop().time() + 10
    while len(found) < 3 and asyncio.get_running_loop().time() < deadline:
        found |= await seen(watcher)  # through Redis
    found |= await seen(watcher, quiet_s=1.5)  # and then nothing more
    assert len(found) == 3 and set(found) <= {1, 2, 3, 4, 5}, found

    async def a_holds_five() -> None:
        body = (await http_get(a, "/api/projects/pres/presence")).json()
        assert len([c for i in body["instances"] for c in i["clients"]]) == 5

    await eventually(a_holds_five)
    for ws in (watcher, *owners):
        await ws.close()
