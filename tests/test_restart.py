"""Restart and crash: what was acknowledged survives, on the embedded default."""

from __future__ import annotations

from pycrdt import Map

from blackboard.sync.client import Session
from tests.support.api import create_project, project_json
from tests.support.server import ServerProcess


async def _write_shots(server: ServerProcess, project_id: str, count: int) -> None:
    async with Session(server.ws, project_id) as client:
        shots = client.doc.get("shots", type=Map)
        for i in range(count):
            shots[f"S{i}"] = Map({"title": f"shot {i}", "order": i})
        await client.flush()  # every update is acknowledged as durable


async def test_graceful_restart_keeps_everything(server: ServerProcess) -> None:
    await create_project(server, "film")
    await _write_shots(server, "film", 50)
    before = await project_json(server, "film")
    await server.stop()
    await server.restart()
    after = await project_json(server, "film")
    assert after["doc"] == before["doc"]
    assert len(after["doc"]["shots"]) == 50
    # A fresh client sees everything too.
    async with Session(server.ws, "film") as fresh:
        assert len(fresh.doc.get("shots", type=Map)) == 50


async def test_kill_9_keeps_every_acknowledged_update(server: ServerProcess) -> None:
    await create_project(server, "crash")
    await _write_shots(server, "crash", 80)
    await server.kill()  # no flush, no compaction, no goodbye
    await server.restart()
    doc = (await project_json(server, "crash"))["doc"]
    assert sorted(doc["shots"]) == sorted(f"S{i}" for i in range(80))
    assert doc["shots"]["S79"] == {"title": "shot 79", "order": 79.0}
