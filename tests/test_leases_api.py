"""Task leases through real server processes, on both backends, with the mirror watched
by a connected agent."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import httpx
from pycrdt import Map

from blackboard.sync.client import Session
from tests.support.api import create_project, eventually
from tests.support.server import ServerProcess, StartServer

_keys = itertools.count()


async def _agent_with_task(server: ServerProcess, project_id: str) -> Session:
    await create_project(server, project_id)
    agent = Session(server.ws, project_id)
    await agent.connect()
    tasks = agent.doc.get("tasks", type=Map)
    with agent.doc.transaction():
        tasks["T1"] = Map({"kind": "render", "status": "pending", "attempt": 1})
    await agent.flush()
    return agent


async def _lease(
    http: httpx.AsyncClient, project_id: str, task_id: str = "T1", **body: Any
) -> tuple[int, dict[str, Any]]:
    body.setdefault("idempotency_key", f"k{next(_keys)}")
    response = await http.post(f"/api/projects/{project_id}/tasks/{task_id}/lease", json=body)
    return response.status_code, response.json()


def _task_shows(agent: Session, expected: dict[str, Any]) -> Callable[[], None]:
    def check() -> None:
        task = agent.doc.get("tasks", type=Map)["T1"].to_py()
        assert {k: task.get(k) for k in expected} == expected, task

    return check


async def test_twenty_claimants_one_holder_mirrored_into_the_task(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    agent = await _agent_with_task(server, "race")
    async with httpx.AsyncClient(base_url=server.http, timeout=20) as http:
        replies = await asyncio.gather(
            *(_lease(http, "race", action="claim", holder=f"agent-{i}") for i in range(20))
        )
        won = [body for status, body in replies if status == 200]
        assert len(won) == 1
        lost = [(status, body["error"]) for status, body in replies if status != 200]
        assert set(lost) == {(409, "lease_held")} and len(lost) == 19
        winner = won[0]
        assert winner["fencing_token"] == 1 and winner["task_id"] == "T1"
        await eventually(
            _task_shows(
                agent,
                {
                    "assignee": winner["holder"],
                    "lease_holder": winner["holder"],
                    "lease_expires_at": winner["expires_at"],
                    "kind": "render",
                },
            )
        )
        status, released = await _lease(
            http, "race", action="release", holder=winner["holder"], fencing_token=1
        )
        assert status == 200 and released["holder"] is None
        # The holder's fields are cleared; who did the work stays the assignee.
        await eventually(
            _task_shows(
                agent,
                {"assignee": winner["holder"], "lease_holder": None, "lease_expires_at": None},
            )
        )
    await agent.close()


async def test_expiry_hands_over_and_the_stale_holder_is_refused(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    agent = await _agent_with_task(server, "handover")
    async with httpx.AsyncClient(base_url=server.http, timeout=20) as http:
        status, first = await _lease(http, "handover", action="claim", holder="slow", ttl_s=1)
        assert status == 200
        status, body = await _lease(http, "handover", action="claim", holder="eager")
        assert (status, body["error"], body["holder"]) == (409, "lease_held", "slow")
        await eventually(_task_shows(agent, {"lease_holder": "slow"}))
        # Nobody releases: the server frees the task when the lease expires.
        await eventually(_task_shows(agent, {"lease_holder": None, "assignee": "slow"}))
        status, second = await _lease(http, "handover", action="claim", holder="eager", ttl_s=60)
        assert status == 200 and second["fencing_token"] > first["fencing_token"]
        await eventually(_task_shows(agent, {"lease_holder": "eager", "assignee": "eager"}))
        for action in ("renew", "release"):
            status, body = await _lease(
                http, "handover", action=action, holder="slow", fencing_token=first["fencing_token"]
            )
            assert (status, body["error"]) == (409, "stale_token"), body
        status, renewed = await _lease(
            http,
            "handover",
            action="renew",
            holder="eager",
            fencing_token=second["fencing_token"],
            ttl_s=120,
        )
        assert status == 200 and renewed["expires_at"] > second["expires_at"]
        await eventually(_task_shows(agent, {"lease_expires_at": renewed["expires_at"]}))
    await agent.close()


async def test_bad_requests_missing_tasks_and_replays(server: ServerProcess) -> None:
    agent = await _agent_with_task(server, "p")
    async with httpx.AsyncClient(base_url=server.http, timeout=20) as http:
        for body, detail in [
            ({"action": "steal", "holder": "a"}, "action must be one of"),
            ({"action": "claim"}, "holder"),
            ({"action": "claim", "holder": "a", "ttl_s": 0}, "ttl_s"),
            ({"action": "claim", "holder": "a", "ttl_s": 10**9}, "ttl_s"),
            ({"action": "renew", "holder": "a"}, "fencing_token"),
            ({"action": "release", "holder": "a", "fencing_token": "1"}, "fencing_token"),
        ]:
            status, reply = await _lease(http, "p", **body)
            assert status == 422 and detail in reply["detail"], (body, reply)
        status, reply = await _lease(http, "p", "T404", action="claim", holder="a")
        assert (status, reply["error"]) == (404, "not_found")
        status, reply = await _lease(http, "ghost", action="claim", holder="a")
        assert status == 404

        claim = {"action": "claim", "holder": "a", "idempotency_key": "once"}
        first = await _lease(http, "p", **claim)
        again = await http.post("/api/projects/p/tasks/T1/lease", json=claim)
        assert (again.status_code, again.json()) == first
        assert again.headers["Idempotent-Replayed"] == "true"
        status, reply = await _lease(http, "p", **{**claim, "holder": "b"})
        assert (status, reply["error"]) == (409, "idempotency_conflict")
    await agent.close()
