"""The offline-first agent client (DESIGN.md section 10) against real server processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pycrdt import Map

from blackboard.sync.client import (
    BlackboardClient,
    CallExpired,
    CallRefused,
    ClientStopped,
    ConnectionRefused,
    LeaseLost,
    UpdateTooLarge,
)
from blackboard.sync.client.replica import Replica
from blackboard.web.services import Services
from blackboard.web.settings import Settings
from tests.support.api import create_project, eventually, project_json
from tests.support.auth import start_auth_server, token
from tests.support.server import ROOT, ServerProcess, StartServer


async def _ledger(server: ServerProcess, project_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get(f"/api/projects/{project_id}/budget/ledger?limit=1000")
        assert response.status_code == 200, response.text
        return response.json()["items"]


async def test_edits_sync_flush_and_budget_round_trip(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_project(server, "film")
    client = BlackboardClient(server.ws, "film", replica=tmp_path / "agent.db")
    await client.start()
    await client.wait_synced(10)
    assert client.doc.get("spec", type=Map)["title"] == "film"
    client.doc.get("shots", type=Map)["S1"] = Map({"title": "Opening"})
    await client.flushed(10)
    assert client.pending_updates == 0
    shots = (await project_json(server, "film"))["doc"]["shots"]
    assert shots["S1"]["title"] == "Opening"
    reserved = await client.budget.reserve(100, ref="S1")
    committed = await client.budget.commit(reserved["reservation_id"], 60)
    assert committed["balances"]["spent"] == 60
    with pytest.raises(CallRefused) as refused:
        await client.budget.reserve(10_000)
    assert refused.value.error == "insufficient_budget"
    await client.stop()


async def _agent(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.support.agent_process", *args),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def _read_line(agent: asyncio.subprocess.Process, timeout: float) -> str:
    """The agent's next stdout line, waited for at most `timeout` (an agent may hang)."""
    assert agent.stdout is not None
    return (await asyncio.wait_for(agent.stdout.readline(), timeout)).decode().strip()


async def _kill(agent: asyncio.subprocess.Process) -> None:
    agent.kill()
    await asyncio.wait_for(agent.wait(), 10)


async def test_agent_and_server_killed_lose_nothing_and_reserve_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_project(server, "film")
    replica = str(tmp_path / "agent.db")
    await server.kill()
    # Offline: 2,000 edits and 3 reserves in the replica; then kill -9 the agent.
    agent = await _agent("offline", server.ws, "film", replica, "2000", "3")
    assert await _read_line(agent, 120) == "ready"
    await _kill(agent)

    # The server comes back; kill both once the first piece of the backlog (2 MB, sent as
    # several messages under the 1 MiB limit) is committed.
    await server.restart()
    agent = await _agent("sync", server.ws, "film", replica)

    async def some_edits_committed() -> None:
        assert (await project_json(server, "film"))["seq"] > 0

    await eventually(some_edits_committed, 60)
    await server.kill()
    await _kill(agent)

    # Again, this time once a reserve is committed (its reply may never reach the agent).
    await server.restart()
    agent = await _agent("sync", server.ws, "film", replica)

    async def a_reserve_committed() -> None:
        assert any(e["op"] == "reserve" for e in await _ledger(server, "film"))

    await eventually(a_reserve_committed, 60)
    await server.kill()
    await _kill(agent)

    await server.restart()
    agent = await _agent("sync", server.ws, "film", replica)
    summary = json.loads(await _read_line(agent, 120))
    assert await asyncio.wait_for(agent.wait(), 30) == 0
    assert summary["pending_updates"] == 0
    shots = (await project_json(server, "film"))["doc"]["shots"]
    assert sorted(shots) == sorted(f"S{i}" for i in range(2000))
    assert shots["S1999"] == {"title": "shot 1999", "order": 1999, "notes": "7cf" * 250}
    reserves = [e for e in await _ledger(server, "film") if e["op"] == "reserve"]
    assert sorted(e["ref"] for e in reserves) == ["r0", "r1", "r2"]
    left = Replica(replica)
    assert left.pending_rows() == 0 and left.calls() == []
    left.close()


def _write_shots(client: BlackboardClient, prefix: str, count: int, size: int) -> None:
    shots = client.doc.get("shots", type=Map)
    for i in range(count):
        # Random text: the server's message limit is on bytes that do not compress away.
        shots[f"{prefix}{i}"] = Map({"title": f"{prefix}{i}", "notes": os.urandom(size).hex()})


async def test_a_backlog_over_the_message_limit_syncs_and_a_big_document_is_received(
    server: ServerProcess, tmp_path: Path
) -> None:
    """18 MiB of offline edits go out under the default 1 MiB message limit; a fresh
    client then joins the document, bigger than websockets' 16 MiB default."""
    await create_project(server, "big")
    agent = BlackboardClient(server.ws, "big", replica=tmp_path / "a.db")
    _write_shots(agent, "S", 360, 25_000)  # 360 edits of 50 kB (hex) each
    assert agent.pending_updates == 360
    await agent.start()
    await agent.flushed(120)
    assert 1009 not in agent.close_codes and list(agent.close_codes) == []
    await agent.stop()

    async with BlackboardClient(server.ws, "big", connect_timeout_s=120) as fresh:
        shots = fresh.doc.get("shots", type=Map)
        assert len(shots) == 360
        assert len(fresh.doc.get_update()) > 17 * 1024 * 1024  # over 16 MiB
        assert shots["S359"]["notes"] == agent.doc.get("shots", type=Map)["S359"]["notes"]


async def test_one_transaction_over_the_limit_fails_naming_the_limit(
    server: ServerProcess,
) -> None:
    await create_project(server, "film")
    async with BlackboardClient(server.ws, "film") as client:
        with pytest.raises(ExceptionGroup) as raised:  # pycrdt wraps observer errors
            client.doc.get("shots", type=Map)["S1"] = Map({"notes": os.urandom(600_000).hex()})
        too_large = raised.value.exceptions[0]
        assert isinstance(too_large, UpdateTooLarge)
        assert "message limit of 1048576 bytes" in str(too_large)
        with pytest.raises(UpdateTooLarge):
            await client.flushed(5)


async def test_an_unknown_project_is_not_retried(server: ServerProcess) -> None:
    client = BlackboardClient(server.ws, "nope")
    await client.start()
    with pytest.raises(ConnectionRefused) as refused:
        await client.wait_synced(10)
    assert refused.value.code == 4404
    await asyncio.sleep(1)  # a window for a wrongful retry (nothing to wait for)
    assert list(client.close_codes) == [4404]
    await client.stop()


async def test_server_restarts_during_steady_edits_lose_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Five server restarts (three SIGKILL, two SIGTERM) in 60 s of edits every 20 ms."""
    await create_project(server, "film")
    client = BlackboardClient(server.ws, "film", replica=tmp_path / "a.db")
    await client.start()
    await client.wait_synced(10)
    written: list[str] = []

    async def edit_steadily() -> None:
        shots = client.doc.get("shots", type=Map)
        while True:
            shot_id = f"S{len(written)}"
            shots[shot_id] = Map({"title": shot_id})
            written.append(shot_id)
            await asyncio.sleep(0.02)  # the pace of the edits

    editor = asyncio.create_task(edit_steadily())
    try:
        for round_ in range(5):
            await asyncio.sleep(10)  # up for a while, under edits
            if round_ % 2 == 0:
                await server.kill()
            else:
                await server.stop()
            await asyncio.sleep(1)  # down for a while: the client backs off
            await server.restart()
        await asyncio.sleep(5)  # 5 x (10 s up + 1 s down) + 5 s: 60 s of edits
    finally:
        editor.cancel()
    await client.flushed(60)
    await client.stop()
    shots = (await project_json(server, "film"))["doc"]["shots"]
    assert len(written) > 500
    assert sorted(shots) == sorted(written)
    # Backoff with full jitter: each delay drawn below a ceiling that doubles while the
    # server stays down, and the delays are spread, not equal.
    history = list(client.backoff.history)
    assert len(history) >= 5
    assert all(0 <= delay <= ceiling for ceiling, delay in history)
    assert max(ceiling for ceiling, _ in history) >= 2 * client.backoff.base_s
    assert len({round(delay, 6) for _, delay in history}) == len(history)


async def test_an_expired_token_is_replaced_by_the_provider(
    start_server: StartServer,
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    minted: list[str] = []

    async def provider() -> str:
        minted.append(token("film", "write", "ana", ttl_s=3 if not minted else 600))
        return minted[-1]

    client = BlackboardClient(server.ws, "film", token_provider=provider)
    await client.start()
    await client.wait_synced(10)
    client.doc.get("shots", type=Map)["S1"] = Map({"title": "before"})
    await client.flushed(10)
    await eventually(lambda: _assert(4401 in client.close_codes), timeout=15)
    await client.wait_synced(15)  # resumed with the provider's second token
    assert len(minted) == 2 and client.credentials.token == minted[1]
    client.doc.get("shots", type=Map)["S2"] = Map({"title": "after"})
    await client.flushed(10)
    charged = await client.budget.charge(1)  # the HTTP calls carry the fresh token too
    assert charged["actor"] == "ana"
    await client.stop()
    shots = (await project_json(server, "film", admin))["doc"]["shots"]
    assert shots["S1"]["title"] == "before" and shots["S2"]["title"] == "after"


def _assert(condition: bool) -> None:
    assert condition


async def _with_task(server: ServerProcess, project_id: str) -> None:
    await create_project(server, project_id)
    async with BlackboardClient(server.ws, project_id) as setup:
        setup.doc.get("tasks", type=Map)["T1"] = Map({"kind": "render", "status": "pending"})
        await setup.flushed(10)


async def test_a_lease_is_kept_past_three_ttls_and_released(server: ServerProcess) -> None:
    await _with_task(server, "film")
    async with (
        BlackboardClient(server.ws, "film", name="worker-a") as a,
        BlackboardClient(server.ws, "film", name="worker-b") as b,
    ):
        async with a.task_lease("T1", ttl_s=1.5) as lease:
            await asyncio.sleep(5)  # past three ttls
            lease.check()
            assert lease.renewals >= 3
            with pytest.raises(CallRefused) as held:
                await b.leases.claim("T1", 10)
            assert held.value.error == "lease_held" and held.value.body["holder"] == "worker-a"
        taken = await b.leases.claim("T1", 10)  # released on exit
        assert taken["fencing_token"] > lease.fencing_token


async def test_a_lease_lost_while_paused_raises(server: ServerProcess) -> None:
    await _with_task(server, "film")
    async with (
        BlackboardClient(server.ws, "film", name="worker-a") as a,
        BlackboardClient(server.ws, "film", name="worker-b") as b,
    ):
        with pytest.raises(LeaseLost):
            async with a.task_lease("T1", ttl_s=1.0) as lease:
                # The agent is paused (a blocked loop): its renewals stand still.
                time.sleep(1.5)  # noqa: ASYNC251
                taken = await b.leases.claim("T1", 30)
                assert taken["fencing_token"] > lease.fencing_token
                await eventually(lambda: _assert(lease.lost is not None))  # renewal refused
                with pytest.raises(LeaseLost):
                    lease.check()


async def test_presence_is_published_and_sent_again_after_a_restart(
    server: ServerProcess,
) -> None:
    await create_project(server, "film")
    client = BlackboardClient(server.ws, "film")
    await client.start()
    await client.wait_synced(10)
    client.set_presence({"agent": client.name, "rendering": "S03"})

    async def present() -> None:
        assert {"agent": client.name, "rendering": "S03"} in await _presence(server, "film")

    await eventually(present, timeout=10)
    await server.kill()
    await server.restart()
    await eventually(present, timeout=20)
    await client.stop()


async def _presence(server: ServerProcess, project_id: str) -> list[dict]:
    """The presence states the server holds for a project, on every instance."""
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get(f"/api/projects/{project_id}/presence")
    assert response.status_code == 200, response.text
    instances = response.json()["instances"]
    return [c["state"] for instance in instances for c in instance["clients"]]


async def test_a_connected_idle_client_costs_under_one_percent_of_a_core(
    server: ServerProcess,
) -> None:
    await create_project(server, "film")
    async with BlackboardClient(server.ws, "film") as client:
        client.set_presence({"agent": "idle"})

        async def settled() -> None:  # measured once the client's start-up work is done
            assert {"agent": "idle"} in await _presence(server, "film")

        await eventually(settled)
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(5)  # the idle time measured
        share = (time.process_time() - cpu) / (time.monotonic() - wall)
        assert client.connected
    print(f"idle client: {share:.4%} of a core")
    assert share < 0.01


async def test_a_call_queued_longer_than_the_key_retention_is_not_replayed(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_project(server, "film")
    replica = tmp_path / "a.db"
    offline = BlackboardClient("ws://127.0.0.1:9", "film", replica=replica)
    queued = asyncio.create_task(offline.budget.reserve(5))
    await eventually(lambda: _assert(len(offline.replica.calls()) == 1))
    await offline.stop()
    with pytest.raises(ClientStopped):
        await queued
    await asyncio.sleep(1.2)  # the queued call ages past the 1 s retention (a clock)
    client = BlackboardClient(server.ws, "film", replica=replica, idempotency_ttl_s=1.0)
    await client.start()
    await client.calls.settled(20)
    [(_, outcome)] = client.calls.recovered
    assert isinstance(outcome, CallExpired) and "not replayed" in str(outcome)
    await client.stop()
    assert await _ledger(server, "film") == []  # the expired reserve was never sent


def test_the_key_retention_is_a_setting(tmp_path: Path) -> None:
    assert Settings.from_env({}).idempotency_ttl_s == 7 * 24 * 3600
    settings = Settings.from_env(
        {"BLACKBOARD_IDEMPOTENCY_TTL_S": "60", "BLACKBOARD_DATA_DIR": str(tmp_path)}
    )
    assert settings.idempotency_ttl_s == 60
    assert Services.build(settings).ledger.key_retention_s == 60  # what prune_keys keeps


async def test_the_example_agent_runs_against_a_real_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    def example(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "examples/agent.py", "--url", server.ws, *args]
        replica = ["--replica", str(tmp_path / "agent.db")]
        return subprocess.run(
            command + replica, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    first = await asyncio.to_thread(example, "--demo", "--project", "demo")
    assert first.returncode == 0, first.stderr
    assert "T1 done with fencing token 1; spent 2.5, available 97.5" in first.stdout
    task = (await project_json(server, "demo"))["doc"]["tasks"]["T1"]
    assert task["status"] == "done" and json.loads(task["result"])["frames"] == 96
    assert "lease_holder" not in task or task["lease_holder"] is None  # released
    ledger = await _ledger(server, "demo")
    assert [(e["op"], e.get("ref")) for e in ledger] == [("reserve", "T1"), ("commit", None)]
    again = await asyncio.to_thread(example, "--project", "demo")
    assert again.returncode == 0 and "no pending task in 'demo'" in again.stdout


async def test_a_restarted_agent_has_its_document_offline(
    server: ServerProcess, tmp_path: Path
) -> None:
    await create_project(server, "film")
    replica = tmp_path / "a.db"
    async with BlackboardClient(server.ws, "film", replica=replica) as first:
        first.doc.get("shots", type=Map)["S1"] = Map({"title": "synced"})
        await first.flushed(10)
    await server.kill()
    again = BlackboardClient(server.ws, "film", replica=replica)
    await again.start()  # the server is down: the document comes from the replica
    assert again.doc.get("spec", type=Map)["title"] == "film"
    assert again.doc.get("shots", type=Map)["S1"]["title"] == "synced"
    again.doc.get("shots", type=Map)["S2"] = Map({"title": "offline"})
    assert again.pending_updates == 1 and again.name == first.name
    await again.stop()
    left = Replica(replica)
    assert left.pending_rows() == 1
    left.close()


async def test_calls_wait_for_the_edits_made_before_them(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Offline, an agent creates a task and claims it: the claim goes out only after the
    task is on the server (sent first, it would be refused 404)."""
    await create_project(server, "film")
    await server.kill()
    client = BlackboardClient(server.ws, "film", replica=tmp_path / "a.db", name="worker-a")
    await client.start()
    client.doc.get("tasks", type=Map)["T9"] = Map({"kind": "render", "status": "pending"})
    claim = asyncio.create_task(client.leases.claim("T9", 60))
    await asyncio.sleep(1)  # a window for a wrongful send (nothing to wait for)
    assert not claim.done()  # offline: queued
    await server.restart()
    granted = await asyncio.wait_for(claim, 60)
    assert granted["holder"] == "worker-a" and granted["fencing_token"] == 1
    await client.stop()
    task = (await project_json(server, "film"))["doc"]["tasks"]["T9"]
    assert task["lease_holder"] == "worker-a"


async def test_a_failing_plain_token_provider_is_asked_again(
    start_server: StartServer,
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    asked: list[int] = []

    def provider() -> str:  # a plain callable this time
        asked.append(1)
        if len(asked) == 1:
            raise RuntimeError("the token service is down")
        return token("film", "write", "ana")

    client = BlackboardClient(server.ws, "film", token_provider=provider)
    await client.start()
    await client.wait_synced(20)
    assert len(asked) == 2 and list(client.close_codes) == [1006]
    await client.stop()
