"""Postgres backends killed under load (issue 12): with every server connection
terminated again and again (`pg_terminate_backend`) while agents write and budget ops
run, no acknowledged update or op is lost, and no connection is reused while an
interrupted operation is still in progress on it (asyncpg: `cannot switch to state 12;
another operation is in progress`)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from blackboard.persistence.postgres_database import PostgresDatabase
from tests.support.api import create_project, eventually
from tests.support.backends import PG_URL
from tests.support.server import ServerProcess, StartServer
from tests.test_durability_postgres import FLUSH_TIMEOUT_S, Writer, stored_shots, write_steadily

KILL_EVERY_S = 0.15
BUSY_MESSAGE = "another operation"


async def kill_backends(database: str, stop: asyncio.Event) -> int:
    """Terminate every connection to `database` each KILL_EVERY_S until `stop`."""
    admin = await asyncpg.connect(PG_URL, timeout=10)
    killed = 0
    try:
        while not stop.is_set():
            killed += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            await asyncio.sleep(KILL_EVERY_S)  # the pace of the kills
    finally:
        await admin.close()
    return killed


async def charge_steadily(server: ServerProcess, name: str, stop: asyncio.Event) -> list[str]:
    """Charge 1 at a time, retrying each op with its key until it is decided; returns
    the keys the server acknowledged."""
    acknowledged = []
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for n in itertools.count():
            if stop.is_set():
                return acknowledged
            op = {"op": "charge", "amount": 1, "idempotency_key": f"{name}-{n}"}
            while True:
                response = await http.post("/api/projects/film/budget/ops", json=op)
                if response.status_code == 200:
                    acknowledged.append(op["idempotency_key"])
                    break
                assert response.status_code == 503, response.text  # undecided: retry
                await asyncio.sleep(0.05)  # a client's pause before its retry
    return acknowledged


async def test_killed_connections_are_discarded_and_nothing_acked_is_lost(
    pg_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(env={"BLACKBOARD_DATABASE_URL": pg_url})
    await create_project(server, "film", budget_total=100000)
    writers = [Writer(server, "film", f"w{i}") for i in range(6)]
    await asyncio.gather(*(w.client.connect() for w in writers))
    stop = asyncio.Event()
    load = [asyncio.create_task(write_steadily(w, 300, 0.01)) for w in writers]
    charges = [asyncio.create_task(charge_steadily(server, f"c{i}", stop)) for i in range(3)]
    killer = asyncio.create_task(kill_backends(urlsplit(pg_url).path.lstrip("/"), stop))
    await asyncio.gather(*load)
    stop.set()
    killed = await killer
    acknowledged_ops = [key for keys in await asyncio.gather(*charges) for key in keys]
    await asyncio.gather(*(w.client.flush(FLUSH_TIMEOUT_S) for w in writers))
    await asyncio.gather(*(w.client.close() for w in writers))

    assert killed >= 10, killed  # the kills did land
    in_database = await stored_shots(pg_url, "film", tmp_path)
    for writer in writers:
        assert set(writer.acked_shots()) <= in_database
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        balances = (await http.get("/api/projects/film/budget")).json()
    assert balances["spent"] == len(acknowledged_ops) > 0
    logs = server.logs()
    assert BUSY_MESSAGE not in logs, [line for line in logs.splitlines() if BUSY_MESSAGE in line]


async def test_a_cancelled_operation_does_not_hold_or_reuse_its_connection(pg_url: str) -> None:
    db = PostgresDatabase(pg_url, pool_size=1)
    await db.open()
    try:
        first = await db.fetchval("SELECT pg_backend_pid()")
        sleeping = asyncio.create_task(db.fetchval("SELECT pg_sleep(30)"))
        await eventually(lambda: _running(pg_url, first, "SELECT pg_sleep(30)"))
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        # The one pooled connection was terminated, not reset: the next statement gets a
        # new connection at once instead of waiting on the interrupted one.
        async with asyncio.timeout(5):
            second = await db.fetchval("SELECT pg_backend_pid()")
        assert second != first
        async with db.transaction() as conn:  # and transactions work on it
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def _running(url: str, pid: int, query: str) -> None:
    """Assert that backend `pid` is running `query` now."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        running = await conn.fetchval(
            "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
        )
    finally:
        await conn.close()
    assert running == query, running
