"""The budget through real server processes, on both backends."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pycrdt import Map

from blackboard.sync.client import Session
from tests.support.api import create_project, eventually
from tests.support.budget_workload import check_outcome, run_workload
from tests.support.cli import run_cli
from tests.support.server import ServerProcess, StartServer

Reply = tuple[int, dict[str, Any]]


def _client(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.http, timeout=30, limits=httpx.Limits(max_connections=128)
    )


async def _op(http: httpx.AsyncClient, project_id: str, body: dict[str, Any]) -> Reply:
    response = await http.post(f"/api/projects/{project_id}/budget/ops", json=body)
    return response.status_code, response.json()


async def _ledger(http: httpx.AsyncClient, project_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await http.get(
            f"/api/projects/{project_id}/budget/ledger", params={"limit": 500, "cursor": cursor}
        )
        assert page.status_code == 200, page.text
        rows.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return rows


async def _balances(http: httpx.AsyncClient, project_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/projects/{project_id}/budget")
    assert response.status_code == 200, response.text
    return response.json()


async def test_64_clients_with_concurrent_duplicates(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "hot", budget_total=400, currency="EUR")
    async with _client(server) as http:
        outcome = await run_workload(lambda body: _op(http, "hot", body), workers=64, rounds=6)
        assert len(outcome.replies) >= 384 and outcome.duplicated > 50
        check_outcome(outcome, await _ledger(http, "hot"), await _balances(http, "hot"), 400)


async def test_bad_input_is_refused_and_stores_nothing(server: ServerProcess) -> None:
    await create_project(server, "p", budget_total=100)
    bad: list[tuple[dict[str, Any] | bytes, str]] = [
        ({"op": "charge", "amount": -1}, "must not be negative"),
        ({"op": "charge", "amount": "1.00001"}, "more than 4 decimal places"),
        ({"op": "charge", "amount": 1e-5}, "more than 4 decimal places"),
        ({"op": "charge", "amount": 0.12345}, "more than 4 decimal places"),
        ({"op": "charge", "amount": "Infinity"}, "plain decimal"),
        # Decimal() takes each of these; money is plain ASCII digits only (issue 12).
        *(
            ({"op": "charge", "amount": text}, "plain decimal")
            for text in (" 12 ", "1_000", "\u0661\u0662", "+5", "5.", ".5", "1e2", "")
        ),
        ({"op": "charge", "amount": "ten"}, "must be a number"),
        ({"op": "charge", "amount": True}, "must be a number"),
        ({"op": "charge", "amount": 1e12}, "exceeds"),
        ({"op": "charge"}, "amount must be a number"),
        ({"op": "reserve", "amount": 0}, "above 0"),
        ({"op": "reserve", "amount": 1, "ttl_s": 0}, "ttl_s"),
        ({"op": "charge", "amount": 1, "ttl_s": 5}, "ttl_s applies to reserve only"),
        ({"op": "steal", "amount": 1}, "op must be one of"),
        ({"op": "commit", "amount": 1}, "needs a reservation_id"),
        ({"op": "release", "reservation_id": "r", "amount": 1}, "takes no amount"),
        ({"op": "charge", "amount": 1, "reservation_id": "r"}, "does not apply"),
        ({"op": "charge", "amount": 1, "ref": "a\x00b"}, "NUL"),
        (b'{"op": "charge", "amount": NaN, "idempotency_key": "k"}', "finite"),
    ]
    async with _client(server) as http:
        for body, detail in bad:
            if isinstance(body, bytes):
                response = await http.post("/api/projects/p/budget/ops", content=body)
            else:
                response = await http.post(
                    "/api/projects/p/budget/ops", json={**body, "idempotency_key": "k"}
                )
            assert response.status_code == 422, (body, response.text)
            assert detail in response.json()["detail"], (body, response.text)
        missing_key = await http.post("/api/projects/p/budget/ops", json={"op": "charge"})
        assert missing_key.status_code == 422
        assert "idempotency_key" in missing_key.json()["detail"]
        # Nothing was stored under "k": a valid request with it now takes effect.
        status, body = await _op(
            http, "p", {"op": "charge", "amount": "0.5", "idempotency_key": "k"}
        )
        assert (status, body["balances"]["spent"]) == (200, 0.5)
        assert len(await _ledger(http, "p")) == 1


async def test_unknown_project_and_reservation(server: ServerProcess) -> None:
    await create_project(server, "p", budget_total=10)
    async with _client(server) as http:
        status, body = await _op(
            http, "nope", {"op": "charge", "amount": 1, "idempotency_key": "k"}
        )
        assert (status, body["error"]) == (404, "not_found")
        for path in ("/api/projects/nope/budget", "/api/projects/nope/budget/ledger"):
            assert (await http.get(path)).status_code == 404
        commit = {"op": "commit", "reservation_id": "rsv-none", "idempotency_key": "c"}
        status, body = await _op(http, "p", commit)
        assert (status, body["error"]) == (404, "not_found")
        assert "rsv-none" in body["detail"]
        bad_cursor = await http.get("/api/projects/p/budget/ledger", params={"cursor": "x"})
        assert bad_cursor.status_code == 422


async def test_project_creation_refuses_bad_budgets(server: ServerProcess) -> None:
    async with _client(server) as http:
        for total in (-5, "12.34567", "NaN", None):
            body = {"project_id": "p", "title": "p", "budget_total": total}
            response = await http.post("/api/projects", json=body)
            assert response.status_code == 422, response.text
            assert "budget_total" in response.json()["detail"]
        assert (await http.get("/api/projects/p")).status_code == 404
        await create_project(server, "p", budget_total="1999.95", currency="JPY")
        balances = await _balances(http, "p")
        assert balances["total"] == 1999.95 and balances["currency"] == "JPY"
        assert balances["version"] == 0


async def test_budget_root_follows_the_ledger_live(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "live", budget_total=100)
    agent = Session(server.ws, "live")
    await agent.connect()
    budget = agent.doc.get("budget", type=Map)
    assert budget.to_py()["total"] == 100
    async with _client(server) as http:
        await _op(http, "live", {"op": "charge", "amount": "12.5", "idempotency_key": "a"})
        _, reserved = await _op(
            http, "live", {"op": "reserve", "amount": 30, "ttl_s": 0.5, "idempotency_key": "b"}
        )

        def shows(expected: dict[str, Any]) -> Callable[[], None]:
            def check() -> None:
                shown = budget.to_py()
                assert {k: shown.get(k) for k in expected} == expected, shown

            return check

        await eventually(
            shows({"spent": 12.5, "reserved": 30.0, "available": 57.5, "version": 2.0})
        )
        # No client acts: the server releases the reservation when it expires, logs it
        # as its own op, and the document shows it.
        await eventually(shows({"reserved": 0.0, "available": 87.5, "version": 3.0}))
        expired = (await _ledger(http, "live"))[-1]
        assert expired["op"] == "expire" and expired["actor"] == "server"
        assert expired["reservation_id"] == reserved["reservation_id"]
        assert expired["amount"] == 30
        balances = await _balances(http, "live")
        assert {k: budget.to_py()[k] for k in ("total", "reserved", "spent", "available")} == {
            k: float(balances[k]) for k in ("total", "reserved", "spent", "available")
        }
    await agent.close()


class _CommittedOps:
    """How many ops of `project_id` are committed, read from the database behind the
    server's back (so a kill can aim at a batch that is committed but not answered)."""

    def __init__(self, server: ServerProcess, env: dict[str, str], project_id: str) -> None:
        self.sql = (
            f"SELECT coalesce(max(op_id), 0) FROM budget_ledger WHERE project_id = '{project_id}'"
        )
        self.url = env.get("BLACKBOARD_DATABASE_URL")
        self.path = server.data_dir / "blackboard.db"

    async def __aenter__(self) -> Callable[[], Awaitable[int]]:
        if self.url:
            self._pg = await asyncpg.connect(self.url)
            return lambda: self._pg.fetchval(self.sql)
        self._lite = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return lambda: asyncio.to_thread(lambda: self._lite.execute(self.sql).fetchone()[0])

    async def __aexit__(self, *exc: object) -> None:
        if self.url:
            await self._pg.close()
        else:
            self._lite.close()


async def _kill_between_commit_and_reply(
    server: ServerProcess,
    env: dict[str, str],
    sent: dict[str, dict[str, Any]],
    answered: dict[str, Reply],
) -> None:
    """32 clients send charges with fresh keys, while the server is frozen (SIGSTOP) now
    and then. Once every reply it wrote before freezing has arrived, more committed ops
    than replies means a batch sits between its commit and its replies: SIGKILL then.
    Otherwise it thaws (SIGCONT) and the burst goes on."""
    assert server.proc is not None
    rng = random.Random(5)
    killed = asyncio.Event()
    async with _client(server) as http, _CommittedOps(server, env, "crash") as committed:

        async def worker(index: int) -> None:
            for n in itertools.count():
                key = f"w{index}-{n}"
                amount = rng.choice([1, "0.25", 3])
                sent[key] = {"op": "charge", "amount": amount, "idempotency_key": key}
                try:
                    answered[key] = await _op(http, "crash", sent[key])
                except httpx.HTTPError:
                    return
                if killed.is_set():
                    return

        workers = [asyncio.create_task(worker(i)) for i in range(32)]
        for _ in range(200):
            await asyncio.sleep(rng.uniform(0.005, 0.05))  # a random moment to freeze it
            os.kill(server.proc.pid, signal.SIGSTOP)
            # What the server wrote before freezing arrives (bytes in flight: no event).
            await asyncio.sleep(0.25)
            if await committed() > len(answered):
                killed.set()
                await server.kill()
                break
            os.kill(server.proc.pid, signal.SIGCONT)
        else:
            await server.kill()
        await asyncio.gather(*workers)


async def test_kill_9_between_commit_and_reply_then_every_key_retried(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "crash", budget_total=1_000_000)
    sent: dict[str, dict[str, Any]] = {}
    answered: dict[str, Reply] = {}
    await _kill_between_commit_and_reply(server, backend_env, sent, answered)
    await server.restart()
    async with _client(server) as http:
        committed = {row["idempotency_key"]: row for row in await _ledger(http, "crash")}
    lost = {key: row for key, row in committed.items() if key not in answered}
    assert lost, "the server was never caught between a commit and its reply"
    # The document may have missed the mirror of that batch: loading the project
    # redoes it from the database.
    async with _client(server) as http:
        truth = await _balances(http, "crash")

        async def document_shows_the_ledger() -> None:
            shown = (await http.get("/api/projects/crash")).json()["doc"]["budget"]
            names = ("total", "reserved", "spent", "available", "version")
            assert {n: shown[n] for n in names} == {n: float(truth[n]) for n in names}

        await eventually(document_shows_the_ledger)

    # Every client retries every key it sent, answered or not, 64 at a time.
    retried: dict[str, Reply] = {}
    async with _client(server) as http:
        keys = list(sent)

        async def retry() -> None:
            while keys:
                key = keys.pop()
                retried[key] = await _op(http, "crash", sent[key])

        await asyncio.gather(*(retry() for _ in range(64)))
        ledger = await _ledger(http, "crash")
        balances = await _balances(http, "crash")
    for key, reply in answered.items():
        assert retried[key] == reply, key
    for key, row in lost.items():
        assert retried[key] == (200, row), key
    # Exactly one effect per key: the committed ones were not applied again.
    assert sorted(row["idempotency_key"] for row in ledger) == sorted(sent)
    assert all(status == 200 for status, _ in retried.values())
    spent = sum(float(body["amount"]) for body in sent.values())
    assert balances["spent"] == spent and balances["reserved"] == 0


async def test_cli_create_takes_an_exact_budget(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"

    async def create(*args: str) -> tuple[int, str, str]:
        return await run_cli("create", *args, "--data-dir", str(data_dir), env={})

    code, _, err = await create("film", "--title", "Film", "--budget", "10.00001")
    assert code != 0
    assert "more than 4 decimal places" in err
    assert (await create("film", "--title", "Film", "--budget", "-3"))[0] != 0
    exact = ("--budget", "25000.5", "--currency", "EUR")
    code, _, err = await create("film", "--title", "Film", *exact)
    assert code == 0, err
    server = await start_server(data_dir=data_dir)
    async with _client(server) as http:
        balances = await _balances(http, "film")
        assert (balances["total"], balances["currency"], balances["version"]) == (25000.5, "EUR", 0)
        shown = (await http.get("/api/projects/film")).json()["doc"]["budget"]
        assert (shown["total"], shown["available"]) == (25000.5, 25000.5)
