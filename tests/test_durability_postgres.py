"""Durable acks on Postgres, under faults: nothing acknowledged is ever lost.

- The server is SIGKILLed in the middle of a burst from many ack-enabled clients.
- Postgres crashes and restarts under load (a private cluster, never the shared one).
- Postgres stays down: peers keep syncing, nothing is acked, accepted updates wait in
  memory and are committed once it is back; past the bound new writes are refused
  (socket 1013, HTTP 503) rather than dropped.
- `POST …/update` answers 200 only once the update is committed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pycrdt import Doc, Map

from blackboard.persistence.factory import make_store
from blackboard.persistence.replay import replay
from blackboard.sync.client import Session
from blackboard.sync.wire import close_codes
from tests.support.api import create_project, eventually, project_json
from tests.support.backends import migrate_database
from tests.support.private_postgres import PrivatePostgres
from tests.support.server import ServerProcess, StartServer

FLUSH_TIMEOUT_S = 30.0


class Writer:
    """An agent writing one shot per update, remembering which message carried which."""

    def __init__(self, server: ServerProcess, project_id: str, name: str) -> None:
        self.name = name
        self.client = Session(server.ws, project_id)
        self.carried_by: list[tuple[int, str]] = []  # (message number, shot id)

    @property
    def shots(self) -> Map:
        return self.client.doc.get("shots", type=Map)

    def write(self, shot_id: str) -> None:
        self.shots[shot_id] = Map({"title": shot_id})
        if self.client.connected:
            self.carried_by.append((self.client.sent, shot_id))

    def acked_shots(self) -> list[str]:
        """Shots whose message the server acknowledged as durable."""
        return [shot for number, shot in self.carried_by if number <= self.client.acked]


async def write_steadily(writer: Writer, count: int, pause_s: float) -> None:
    for i in range(count):
        writer.write(f"{writer.name}-{i}")
        await asyncio.sleep(pause_s)  # the pace of the load


async def stored_shots(database_url: str, project_id: str, tmp_path: Path) -> set[str]:
    """What the database holds, read directly (not through any server)."""
    store = make_store(database_url, tmp_path, pool_size=1)
    await store.open(migrate_schema=False)
    try:
        doc = replay(await store.load(project_id))
    finally:
        await store.close()
    return set(doc.get("shots", type=Map).keys())


async def test_kill_9_mid_burst_loses_no_acknowledged_update(
    pg_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(env={"BLACKBOARD_DATABASE_URL": pg_url})
    projects = [f"p{i}" for i in range(4)]
    for project_id in projects:
        await create_project(server, project_id)
    writers = [Writer(server, projects[i % 4], f"c{i}") for i in range(20)]
    await asyncio.gather(*(w.client.connect() for w in writers))
    burst = [asyncio.create_task(write_steadily(w, 400, 0.004)) for w in writers]

    async def enough_acked() -> None:
        assert sum(len(w.acked_shots()) for w in writers) >= 2000

    await eventually(enough_acked, timeout=60)
    await server.kill()
    await asyncio.gather(*burst)
    await asyncio.gather(*(w.client.close() for w in writers))
    acked = sum(len(w.acked_shots()) for w in writers)
    sent = sum(len(w.carried_by) for w in writers)
    assert 2000 <= acked < sent  # the kill landed in the middle of the burst

    await server.restart()
    for project_id in projects:
        on_server = set((await project_json(server, project_id))["doc"]["shots"])
        for writer in writers:
            if writer.client.project_id == project_id:
                missing = set(writer.acked_shots()) - on_server
                assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres().init_and_start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def private_url(private_pg: PrivatePostgres) -> str:
    url = await private_pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await migrate_database(url)
    return url


async def test_postgres_restarted_under_load_loses_no_acknowledged_update(
    private_pg: PrivatePostgres,
    private_url: str,
    start_server: StartServer,
    tmp_path: Path,
) -> None:
    server = await start_server(env={"BLACKBOARD_DATABASE_URL": private_url})
    await create_project(server, "film")
    writers = [Writer(server, "film", f"w{i}") for i in range(8)]
    await asyncio.gather(*(w.client.connect() for w in writers))
    load = [asyncio.create_task(write_steadily(w, 400, 0.01)) for w in writers]
    try:

        async def under_load() -> None:  # every writer's updates are being committed
            assert all(w.acked_shots() for w in writers)

        await eventually(under_load)
        await private_pg.stop("immediate")  # a crash: no shutdown checkpoint
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:

            async def not_ready() -> None:
                assert (await http.get("/readyz")).status_code == 503

            await eventually(not_ready)
        await private_pg.start()
    finally:
        if not (private_pg.data / "postmaster.pid").exists():
            await private_pg.start()
    await asyncio.gather(*load)
    # The service resumes by itself: every update sent is acknowledged, none refused.
    await asyncio.gather(*(w.client.flush(FLUSH_TIMEOUT_S) for w in writers))
    for writer in writers:
        assert writer.client.connected and writer.client.acked == writer.client.sent
    await asyncio.gather(*(w.client.close() for w in writers))

    in_database = await stored_shots(private_url, "film", tmp_path)
    for writer in writers:
        assert len(writer.acked_shots()) == 400
        assert set(writer.acked_shots()) <= in_database


async def test_database_down_peers_sync_nothing_acked_then_bounded(
    private_pg: PrivatePostgres,
    private_url: str,
    start_server: StartServer,
    tmp_path: Path,
) -> None:
    server = await start_server(
        env={"BLACKBOARD_DATABASE_URL": private_url, "BLACKBOARD_MAX_PENDING_LOG_BYTES": "30000"}
    )
    await create_project(server, "film")
    writer = Writer(server, "film", "a")
    reader = Session(server.ws, "film")
    await writer.client.connect()
    await reader.connect()
    writer.write("before")
    await writer.client.flush()
    acked_before = writer.client.acked

    await private_pg.stop("fast")
    try:
        # Peers keep syncing through the server while nothing can be committed.
        writer.write("during")

        async def reader_has_it() -> None:
            assert "during" in reader.doc.get("shots", type=Map)

        await eventually(reader_has_it)
        await asyncio.sleep(0.5)  # a window for a wrongful ack (nothing to wait for)
        assert writer.client.acked == acked_before  # no ack without a commit

        # Updates wait in memory up to the bound; past it the writer is refused, not
        # silently dropped: closed 1013, and HTTP writes answer 503.
        for i in range(2000):
            if not writer.client.connected:
                break
            writer.write(f"x{i}-" + "y" * 100)
            await asyncio.sleep(0.002)  # the pace of the writes
        await eventually(lambda: _assert_closed(writer.client), timeout=10)
        assert writer.client.close_code == close_codes.TRY_AGAIN_LATER
        assert "database" in writer.client.close_reason
        assert writer.client.acked == acked_before
        accepted = set(reader.doc.get("shots", type=Map).keys())
        assert {"before", "during"} <= accepted and len(accepted) > 10

        extra = Doc()  # bigger than the room left under the bound
        extra.get("shots", type=Map)["http"] = Map({"title": "z" * 2000})
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            refused = await http.post("/api/projects/film/update", content=extra.get_update())
        assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
    finally:
        await private_pg.start()

    # Back up: what was accepted is committed without anyone resending it.
    async def accepted_is_stored() -> None:
        assert accepted <= await stored_shots(private_url, "film", tmp_path)

    await eventually(accepted_is_stored, timeout=FLUSH_TIMEOUT_S)
    # The refused writer reconnects; its handshake sends what the server lacks.
    await writer.client.connect()
    await writer.client.flush(FLUSH_TIMEOUT_S)
    await eventually(lambda: _same_shots(reader, writer.client))
    assert set(writer.shots.keys()) <= await stored_shots(private_url, "film", tmp_path)
    await writer.client.close()
    await reader.close()


async def test_http_update_answers_only_once_committed(
    private_pg: PrivatePostgres,
    private_url: str,
    start_server: StartServer,
    tmp_path: Path,
) -> None:
    server = await start_server(env={"BLACKBOARD_DATABASE_URL": private_url})
    await create_project(server, "film")
    doc = Doc()
    doc.get("shots", type=Map)["S1"] = Map({"title": "one"})
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        await http.get("/api/projects/film")  # load the room while the database is up
        await private_pg.stop("fast")
        try:
            post = asyncio.create_task(
                http.post("/api/projects/film/update", content=doc.get_update())
            )
            await asyncio.sleep(1.5)  # a window for a wrongful answer (nothing to wait for)
            assert not post.done()  # applied, but no answer before it is durable
        finally:
            await private_pg.start()
        response = await post
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"seq": 2, "changed": True}
    store = make_store(private_url, tmp_path, pool_size=1)
    await store.open(migrate_schema=False)
    try:
        assert [entry.seq for entry in await store.history("film", 1, 10)] == [2]
    finally:
        await store.close()


def _assert_closed(client: Session) -> None:
    assert not client.connected


def _same_shots(a: Session, b: Session) -> None:
    assert set(a.doc.get("shots", type=Map).keys()) == set(b.doc.get("shots", type=Map).keys())
