"""Stock JS editors (yjs + y-websocket) against the real server: a rule-breaking edit is
repaired for its author and every other replica; a malformed frame closes its sender
alone."""

from __future__ import annotations

import base64

import httpx
from pycrdt import Map

from blackboard.sync.client import Session
from blackboard.sync.wire.protocol import sync_update
from tests.support.api import create_project, eventually, project_json
from tests.support.js import JsClients
from tests.support.server import ServerProcess


async def _corrections(server: ServerProcess, project_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get(f"/api/projects/{project_id}/corrections")
        assert response.status_code == 200, response.text
        return response.json()["items"]


async def test_a_stale_status_is_repaired_for_its_author_and_everyone(
    server: ServerProcess, js: JsClients
) -> None:
    await create_project(server, "film")
    ids = {name: (await js.connect(name, server.ws, "film"))["clientID"] for name in "xy"}
    # Of two concurrent writes the higher client id wins the key everywhere; make the
    # stale write the winner, so without a repair every replica would show it.
    a, b = sorted(ids, key=ids.__getitem__)
    task = ["tasks", "T1"]
    await js.call("set", name=a, path=task, value={"kind": "render", "status": "running"})
    await js.call("waitFor", name=b, path=[*task, "status"], value="running")
    await js.call("disconnect", name=b)  # b works offline from here
    await js.call("set", name=a, path=[*task, "status"], value="done")
    await js.call("set", name=b, path=[*task, "status"], value="claimed")  # stale
    agent = Session(server.ws, "film")
    await agent.connect()
    await js.call("reconnect", name=b)

    for name in (a, b):
        await js.call("waitFor", name=name, path=[*task, "status"], value="done")
    await eventually(lambda: _status_is(agent, "T1", "done"))

    async def server_done() -> None:
        assert (await project_json(server, "film"))["doc"]["tasks"]["T1"]["status"] == "done"

    await eventually(server_done)
    lattice = [c for c in await _corrections(server, "film") if c["rule"] == "lattice"]
    assert [(c["path"], c["before"], c["after"]) for c in lattice] == [
        ("tasks/T1/status", "claimed", "done")
    ]
    await agent.close()


async def test_a_stock_client_reworks_a_rejected_shot_over_stale_offline_work(
    server: ServerProcess, js: JsClients
) -> None:
    await create_project(server, "film")
    ids = {name: (await js.connect(name, server.ws, "film"))["clientID"] for name in "xy"}
    a, b = sorted(ids, key=ids.__getitem__)  # b's stale write wins the key, as above
    shot = ["shots", "S1"]
    await js.call("set", name=a, path=shot, value={"title": "Opening", "status": "review"})
    await js.call("set", name=a, path=[*shot, "status"], value="rejected")
    await js.call("waitFor", name=b, path=[*shot, "status"], value="rejected")
    await js.call("disconnect", name=b)  # b works offline from here, on revision 0
    await js.call("update", name=a, path=shot, values={"revision": 1, "status": "draft"})
    await js.call("set", name=b, path=[*shot, "status"], value="approved")  # stale
    await js.call("reconnect", name=b)

    reworked = {"title": "Opening", "status": "draft", "revision": 1}
    for name in (a, b):
        await js.call("waitFor", name=name, path=shot, value=reworked)
    await js.call("set", name=b, path=[*shot, "status"], value="planned")  # on revision 1
    await js.call("waitFor", name=a, path=[*shot, "status"], value="planned")

    async def server_planned() -> None:
        doc = (await project_json(server, "film"))["doc"]
        assert doc["shots"]["S1"] == {**reworked, "status": "planned"}

    await eventually(server_planned)
    lattice = [c for c in await _corrections(server, "film") if c["rule"] == "lattice"]
    assert [(c["path"], c["before"], c["after"]) for c in lattice] == [
        ("shots/S1/status", "approved", "draft")
    ]


def _status_is(client: Session, task: str, status: str) -> None:
    assert client.doc.get("tasks", type=Map)[task]["status"] == status


async def test_wrong_types_and_plain_objects_are_repaired_for_everyone(
    server: ServerProcess, js: JsClients
) -> None:
    await create_project(server, "film")
    await js.connect("a", server.ws, "film")
    await js.connect("b", server.ws, "film")
    await js.call("set", name="a", path=["shots", "S1"], value={"title": "Opening"})
    await js.call("set", name="a", path=["shots", "S1", "duration_s"], value="12")
    await js.call("set", name="a", path=["tasks", "T2"], value={"kind": "edit"}, plain=True)

    for name in ("a", "b"):  # the author sees the repair arrive too
        await js.call("waitFor", name=name, path=["shots", "S1", "duration_s"], value=12)
        await js.call("waitFor", name=name, path=["tasks", "T2"], value={"kind": "edit"})

        async def converted(name: str = name) -> None:
            assert await js.call("kind", name=name, path=["tasks", "T2"]) == "YMap"

        await eventually(converted)
    rules = {(c["path"], c["rule"]) for c in await _corrections(server, "film")}
    assert rules == {("shots/S1/duration_s", "wrong_type"), ("tasks/T2", "plain_entry")}


async def test_a_malformed_frame_closes_only_the_js_sender(
    server: ServerProcess, js: JsClients
) -> None:
    await create_project(server, "film")
    await js.connect("bad", server.ws, "film")
    await js.connect("good", server.ws, "film")
    await js.connect("other", server.ws, "film")
    garbage = sync_update(b"\x01\x02\x03")  # does not decode
    await js.call("sendRaw", name="bad", base64=base64.b64encode(garbage).decode())

    async def bad_closed() -> None:
        closes = await js.call("closes", name="bad")
        assert closes and closes[0]["code"] == 4400, closes
        assert "does not apply" in closes[0]["reason"]

    await eventually(bad_closed)
    await js.call("set", name="other", path=["shots", "S1"], value={"title": "still on"})
    await js.call("waitFor", name="good", path=["shots", "S1", "title"], value="still on")
    assert await js.call("closes", name="good") == []
    assert await js.call("closes", name="other") == []
