"""Bad updates against a real server process: malformed ones close only their sender
(4400, with a reason) or answer 422, and are neither stored nor forwarded; rule-breaking
ones are repaired for everyone and listed at `GET …/corrections`."""

from __future__ import annotations

import asyncio

import httpx
import websockets
from pycrdt import Doc, Map

from blackboard.sync.client import Session
from blackboard.sync.wire.protocol import SyncMessage, decode_message, sync_step1, sync_update
from tests.support.api import create_project, eventually, history, project_json
from tests.support.auth import connect, until_closed
from tests.support.regressions import REGRESSIONS, base_doc
from tests.support.server import ServerProcess

PANIC = REGRESSIONS["panic-unwrap-on-missing-parent"]  # on top of base_doc()


def _write(key: str, **fields: object) -> bytes:
    doc = Doc()
    doc.get("shots", type=Map)[key] = Map(fields)
    return doc.get_update()


async def _project_with_base(server: ServerProcess) -> None:
    await create_project(server, "film")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.post("/api/projects/film/update", content=base_doc().get_update())
        assert response.status_code == 200, response.text


async def _joined(server: ServerProcess, project_id: str) -> websockets.ClientConnection:
    ws = await connect(server, project_id)
    await ws.send(sync_step1(b"\x00"))
    await asyncio.wait_for(ws.recv(), 5)
    return ws


async def _updates_seen(ws: websockets.ClientConnection, quiet_s: float = 0.5) -> list[bytes]:
    seen = []
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), quiet_s)
        except TimeoutError:
            return seen
        message = decode_message(frame)  # type: ignore[arg-type]
        if isinstance(message, SyncMessage):
            seen.append(message.payload)


async def test_a_malformed_update_closes_only_its_sender(server: ServerProcess) -> None:
    await _project_with_base(server)
    before = await history(server, "film")
    bystander = await _joined(server, "film")
    await _updates_seen(bystander)
    for bad, reason in [
        (sync_update(PANIC), "does not apply"),  # yrs panics on it
        (sync_update(b"\x01\x02\x03"), "does not apply"),  # does not decode
        (b"\x00\x02\xff", "malformed message"),  # a truncated sync message
    ]:
        sender = await _joined(server, "film")
        await sender.send(bad)
        code, why, _ = await until_closed(sender)
        assert code == 4400 and reason in why, (code, why)
    text_sender = await _joined(server, "film")
    await text_sender.send("hello")
    assert (await until_closed(text_sender))[0] == 4400

    assert await _updates_seen(bystander) == []  # nothing was forwarded
    assert await history(server, "film") == before  # nor stored
    # The room, the other client and the process carry on.
    writer = await _joined(server, "film")
    await writer.send(sync_update(_write("S1", title="still here")))
    assert len(await _updates_seen(bystander)) == 1
    assert (await project_json(server, "film"))["doc"]["shots"]["S1"] == {"title": "still here"}
    for ws in (bystander, writer):
        await ws.close()


async def test_post_update_answers_422_with_the_reason(server: ServerProcess) -> None:
    await _project_with_base(server)
    before = await history(server, "film")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for body in (PANIC, b"\x01\x02\x03", b""):
            response = await http.post("/api/projects/film/update", content=body)
            assert response.status_code == 422, response.text
            assert response.json()["error"] == "malformed_update"
            assert "does not apply" in response.json()["detail"]
        assert await history(server, "film") == before
        ok = await http.post("/api/projects/film/update", content=_write("S1", title="ok"))
        assert ok.status_code == 200 and ok.json()["changed"]


async def test_repairs_reach_every_client_and_are_listed(server: ServerProcess) -> None:
    await create_project(server, "film")
    agent = Session(server.ws, "film")
    await agent.connect()
    watcher = Session(server.ws, "film")
    await watcher.connect()
    with agent.doc.transaction():
        agent.doc.get("shots", type=Map)["S1"] = Map({"duration_s": "12", "status": "review"})
        agent.doc.get("budget", type=Map)["total"] = 1e12
    await agent.flush()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        posted = await http.post("/api/projects/film/update", content=_write("bad id!", title="x"))
        assert posted.status_code == 200
        offending_seq = posted.json()["seq"]

        def repaired(client: Session) -> None:
            shots = client.doc.get("shots", type=Map).to_py()
            assert shots == {"S1": {"duration_s": 12.0, "status": "review"}}
            assert client.doc.get("budget", type=Map)["total"] == 1000.0

        for client in (agent, watcher):
            await eventually(lambda c=client: repaired(c))

        listed = (await http.get("/api/projects/film/corrections")).json()
        assert listed["next_cursor"] is None
        items = {item["path"]: item for item in listed["items"]}
        assert set(items) == {"shots/S1/duration_s", "budget/total", "shots/bad id!"}
        assert items["shots/S1/duration_s"] | {"created_at": None, "seq": None} == {
            "seq": None,
            "actor": "anonymous",
            "path": "shots/S1/duration_s",
            "rule": "wrong_type",
            "before": "12",
            "after": 12.0,
            "created_at": None,
        }
        assert items["budget/total"]["rule"] == "server_only"
        assert items["budget/total"]["after"] == 1000.0
        assert items["shots/bad id!"]["seq"] == offending_seq
        assert items["shots/bad id!"]["before"] == {"title": "x"}

        # Paged like every list.
        first = (await http.get("/api/projects/film/corrections?limit=2")).json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        rest = await http.get(f"/api/projects/film/corrections?cursor={first['next_cursor']}")
        assert [i["path"] for i in first["items"] + rest.json()["items"]] == [
            i["path"] for i in listed["items"]
        ]
        bad_cursor = await http.get("/api/projects/film/corrections?cursor=zzz")
        assert bad_cursor.status_code == 422
        unknown = await http.get("/api/projects/nope/corrections")
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    await agent.close()
    await watcher.close()
