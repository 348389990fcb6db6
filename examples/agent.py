"""A small render agent, built on the offline-first client (README: "Writing an agent").

It claims a pending task, marks it running, "renders" (sleeps: nothing is uploaded yet),
writes the result, commits what it spent from the budget, and releases the task.

    make serve                                   # in another terminal
    .venv/bin/python examples/agent.py --demo    # creates project "demo" with a task

Run it again: with no pending task left it says so and exits. Kill it at any point and
start it again: its edits and calls wait in the replica file and go out on reconnect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Any

import httpx
from pycrdt import Map

from blackboard.sync.client import BlackboardClient


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pending_task(tasks: Map) -> str | None:
    for task_id, task in tasks.items():
        if isinstance(task, Map) and task.get("status") == "pending":
            return task_id
    return None


async def render(task: Map) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # a real agent calls its model here
    return {"frames": 96, "shot_id": task.get("shot_id"), "rendered_at": now()}


async def run(url: str, project_id: str, replica: str, token: str | None, cost: float) -> int:
    client = BlackboardClient(url, project_id, token=token, replica=replica)
    await client.start()
    try:
        await client.wait_synced(30)
        tasks = client.doc.get("tasks", type=Map)
        task_id = pending_task(tasks)
        if task_id is None:
            print(f"no pending task in {project_id!r}")
            return 0
        async with client.task_lease(task_id, ttl_s=30) as lease:
            client.set_presence({"agent": client.name, "task": task_id, "doing": "render"})
            reservation = await client.budget.reserve(cost, ref=task_id)
            task = tasks[task_id]
            with client.doc.transaction():  # one transaction: one write to the replica
                task["status"] = "running"
                task["updated_at"] = now()
            result = await render(task)
            lease.check()  # still ours: nobody else rendered it meanwhile
            with client.doc.transaction():
                task["status"] = "done"
                task["result"] = json.dumps(result)
                task["updated_at"] = now()
            await client.flushed(60)  # the result is committed on the server
            spent = await client.budget.commit(reservation["reservation_id"], cost)
        client.set_presence(None)
        print(
            f"{task_id} done with fencing token {lease.fencing_token};"
            f" spent {spent['amount']}, available {spent['balances']['available']}"
        )
        return 0
    finally:
        await client.stop()


async def demo_project(url: str, project_id: str) -> None:
    """Create the project (if new) with a budget and one pending task to work on."""
    http_url = "http" + url.removeprefix("ws")
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
        body = {"project_id": project_id, "title": "Demo", "budget_total": 100}
        created = await http.post("/api/projects", json=body)
        if created.status_code not in (201, 409):
            raise SystemExit(f"cannot create {project_id!r}: {created.text}")
    async with BlackboardClient(url, project_id) as client:
        tasks = client.doc.get("tasks", type=Map)
        if pending_task(tasks) is None:
            task_id = f"T{len(tasks) + 1}"
            tasks[task_id] = Map(
                {"kind": "render", "shot_id": "S01", "status": "pending", "attempt": 1}
            )
            await client.flushed(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the server")
    parser.add_argument("--project", default="demo", help="project id (default demo)")
    parser.add_argument("--replica", help="replica file (default agent-PROJECT.db)")
    parser.add_argument("--cost", type=float, default=2.5, help="what one render costs")
    parser.add_argument("--demo", action="store_true", help="create the project and a task")
    args = parser.parse_args()
    token = os.environ.get("BLACKBOARD_TOKEN")  # a write token, when auth is on
    if args.demo:
        asyncio.run(demo_project(args.url, args.project))
    replica = args.replica or f"agent-{args.project}.db"
    raise SystemExit(asyncio.run(run(args.url, args.project, replica, token, args.cost)))


if __name__ == "__main__":
    main()
