"""Stock JS clients (yjs + y-websocket) and pycrdt clients editing one project together."""

from __future__ import annotations

from pycrdt import Doc, Map

from blackboard.sync.client import Session
from tests.support.api import create_project, eventually, project_json
from tests.support.js import JsClients
from tests.support.server import ServerProcess


async def test_concurrent_edits_converge_everywhere(server: ServerProcess, js: JsClients) -> None:
    await create_project(server, "film")
    await js.connect("a", server.ws, "film")
    await js.connect("b", server.ws, "film")
    agent = Session(server.ws, "film")
    await agent.connect()

    # Same shot, different fields, at once; plus a shot each.
    await js.call("set", name="a", path=["shots", "S1"], value={"title": "Opening"})
    await js.call("waitFor", name="b", path=["shots", "S1", "title"], value="Opening")
    await js.call("set", name="a", path=["shots", "S1", "duration_s"], value=4)
    await js.call("set", name="b", path=["shots", "S1", "camera"], value="dolly")
    shots = agent.doc.get("shots", type=Map)
    with agent.doc.transaction():
        shots["S2"] = Map({"title": "Chase"})
    await js.call("set", name="b", path=["shots", "S3", "title"], value="Ending")
    await agent.flush()

    expected = {
        "S1": {"title": "Opening", "duration_s": 4, "camera": "dolly"},
        "S2": {"title": "Chase"},
        "S3": {"title": "Ending"},
    }
    for name in ("a", "b"):
        await js.call("waitFor", name=name, path=["shots"], value=expected)

    async def server_has_all() -> None:
        assert (await project_json(server, "film"))["doc"]["shots"] == expected

    await eventually(server_has_all)
    await eventually(lambda: _assert_equal(agent.doc.get("shots", type=Map).to_py(), expected))
    await agent.close()


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected


async def test_awareness_appears_and_disappears(server: ServerProcess, js: JsClients) -> None:
    await create_project(server, "pres")
    await js.connect("a", server.ws, "pres")
    await js.connect("b", server.ws, "pres")
    await js.call("setAwareness", name="a", state={"user": "ana", "shot": "S03"})

    async def b_sees_ana() -> None:
        states = await js.call("awareness", name="b")
        assert {"user": "ana", "shot": "S03"} in states.values()

    await eventually(b_sees_ana)
    # A late joiner gets the snapshot in its handshake.
    await js.connect("c", server.ws, "pres")

    async def c_sees_ana() -> None:
        assert {"user": "ana", "shot": "S03"} in (await js.call("awareness", name="c")).values()

    await eventually(c_sees_ana)
    # The socket closes: the server removes a's state and tells the others within a second.
    await js.call("destroy", name="a")

    async def ana_gone() -> None:
        for name in ("b", "c"):
            states = await js.call("awareness", name=name)
            assert {"user": "ana", "shot": "S03"} not in states.values()

    await eventually(ana_gone, timeout=1.5)


async def test_offline_edits_converge_after_reconnect(server: ServerProcess, js: JsClients) -> None:
    await create_project(server, "off")
    await js.connect("a", server.ws, "off")
    await js.connect("b", server.ws, "off")
    await js.call("disconnect", name="a")
    await js.call(
        "set", name="a", path=["tasks", "T1"], value={"kind": "render", "status": "pending"}
    )
    await js.call("set", name="b", path=["tasks", "T2"], value={"kind": "upscale"})

    # A Python agent edits offline too, then connects with its stale state.
    agent_doc = Doc()
    agent = Session(server.ws, "off", agent_doc)
    await agent.connect()
    await agent.close()
    with agent_doc.transaction():
        agent_doc.get("tasks", type=Map)["T3"] = Map({"kind": "voice"})
    await js.call("reconnect", name="a")
    await agent.connect()
    await agent.flush()

    expected = {
        "T1": {"kind": "render", "status": "pending"},
        "T2": {"kind": "upscale"},
        "T3": {"kind": "voice"},
    }
    for name in ("a", "b"):
        await js.call("waitFor", name=name, path=["tasks"], value=expected)

    async def server_has_all() -> None:
        assert (await project_json(server, "off"))["doc"]["tasks"] == expected

    await eventually(server_has_all)
    await agent.close()


async def test_unknown_project_closes_4404(server: ServerProcess, js: JsClients) -> None:
    reply = await js.connect("x", server.ws, "no-such-project")
    assert not reply["synced"]
    assert reply["closes"][0]["code"] == 4404


async def test_a_fresh_joiner_of_a_big_changed_document_has_all_of_it_at_sync(
    server: ServerProcess, js: JsClients
) -> None:
    """After a big document changes, a fresh joiner is sent the changes, then an encoding
    kept from before them (`sync.room.fresh_join`): stock Yjs holds the changes until the
    encoding arrives, so when it counts itself synced it has the whole document."""
    await create_project(server, "film")
    await js.connect("a", server.ws, "film")
    shots = {f"S{i}": {"notes": "x" * 1000} for i in range(400)}  # over `MIN_BYTES`
    await js.call("update", name="a", path=["shots"], values=shots)
    await js.connect("b", server.ws, "film")  # its step 2 is the encoding kept
    await js.call("set", name="a", path=["shots", "S1", "title"], value="changed")
    await js.call("delete", name="a", path=["shots", "S2"])
    await js.call("set", name="a", path=["shots", "S9"], value={"title": "new"})
    expected = await js.call("get", name="a", path=["shots"])
    await js.call("waitFor", name="b", path=["shots"], value=expected)

    joined = await js.connect("c", server.ws, "film")
    assert joined["synced"] and joined["atSync"]["shots"] == expected
