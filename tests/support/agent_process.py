"""An agent in its own process, so a test can kill it with SIGKILL at a chosen point.

python -m tests.support.agent_process offline URL PROJECT REPLICA EDITS RESERVES
    edits the replica's document EDITS times (one transaction each) and queues
    RESERVES budget reserves, with the server unreachable; prints "ready" once every
    one of them is in the replica, then waits to be killed.
python -m tests.support.agent_process sync URL PROJECT REPLICA
    starts from the replica, sends what it holds, prints a JSON summary and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from pycrdt import Map

from blackboard.sync.client import BlackboardClient
from tests.support.api import eventually


async def offline(url: str, project_id: str, replica: str, edits: int, reserves: int) -> None:
    client = BlackboardClient(url, project_id, replica=replica)
    await client.start()  # the server is down: the client keeps retrying
    shots = client.doc.get("shots", type=Map)
    for i in range(edits):
        # About 1 kB each: the backlog (2 MB for 2,000) spans several 1 MiB messages.
        shots[f"S{i}"] = Map({"title": f"shot {i}", "order": i, "notes": f"{i:x}" * 250})
    calls = [asyncio.create_task(client.budget.reserve(1, ref=f"r{i}")) for i in range(reserves)]
    # Each call's key is in the replica before it is sent (nothing can be sent here).
    await eventually(lambda: _queued(client, reserves), timeout=60, interval=0.01)
    print("ready", flush=True)
    await asyncio.gather(*calls)  # never: killed first


def _queued(client: BlackboardClient, calls: int) -> None:
    assert len(client.replica.calls()) >= calls


async def sync(url: str, project_id: str, replica: str) -> None:
    client = BlackboardClient(url, project_id, replica=replica)
    await client.start()
    await client.wait_synced(60)
    await client.flushed(60)
    await client.calls.settled(60)
    summary = {
        "pending_updates": client.pending_updates,
        "recovered": [json.loads(call.body)["op"] for call, _ in client.calls.recovered],
    }
    await client.stop()
    print(json.dumps(summary), flush=True)


def main(argv: list[str]) -> None:
    mode, url, project_id, replica, *rest = argv
    if mode == "offline":
        asyncio.run(offline(url, project_id, replica, int(rest[0]), int(rest[1])))
    elif mode == "sync":
        asyncio.run(sync(url, project_id, replica))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
