"""An offline backlog over the message limit syncs (DESIGN.md section 2): a writer's
handshake sync step 2 may be as large as the document limit, every other message keeps
the 1 MiB limit, and `POST …/update` takes the same bytes."""

from __future__ import annotations

import httpx
import pytest
import websockets
from pycrdt import Doc, Map

from blackboard.sync.wire.protocol import sync_step1, sync_step2, sync_update
from tests.support.api import create_project, eventually, project_json
from tests.support.auth import connect, start_auth_server, token, until_closed
from tests.support.js import JsClients
from tests.support.server import ServerProcess, StartServer

MiB = 1024 * 1024
SHOTS = 200
NOTE_CHARS = 9_000  # 200 shots x 9 KB: a 1.8 MB backlog


def _backlog(prefix: str, shots: int = SHOTS) -> bytes:
    doc = Doc()
    for i in range(shots):
        doc.get("shots", type=Map)[f"{prefix}{i}"] = Map({"notes": f"{i}" + "n" * NOTE_CHARS})
    return doc.get_update()


async def _refused(ws: websockets.ClientConnection, frame: bytes) -> int | None:
    """Send an oversized `frame`: the close code the server answers with. None if the
    connection was reset first: refused by the transport while the frame was still being
    sent, the server's close frame may be lost with the unread bytes."""
    try:
        await ws.send(frame)
        return (await until_closed(ws))[0]
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except ConnectionResetError:
        return None


async def _handshake(ws: websockets.ClientConnection) -> None:
    await ws.send(sync_step1(b"\x00"))
    for _ in range(2):  # the server's step 1 and its step 2
        await ws.recv()


@pytest.mark.parametrize("shots", [SHOTS, 3 * SHOTS])  # 1.8 MB and 5.4 MB
async def test_stock_client_backlog_over_the_message_limit_syncs(
    server: ServerProcess, js: JsClients, shots: int
) -> None:
    await create_project(server, "film")
    await js.connect("a", server.ws, "film")
    await js.connect("b", server.ws, "film")
    await js.call("disconnect", name="a")
    for i in range(shots):
        await js.call("set", name="a", path=["shots", f"S{i}", "notes"], value="n" * NOTE_CHARS)
    await js.call("set", name="a", path=["spec", "logline"], value="written offline")
    await js.call("set", name="b", path=["spec", "title"], value="while a was away")

    await js.call("reconnect", name="a")
    await js.call("waitFor", name="a", path=["spec", "title"], value="while a was away")
    await js.call("waitFor", name="b", path=["spec", "logline"], value="written offline")
    closes = await js.call("closes", name="a")
    assert all(close["code"] != 1009 for close in closes), closes
    assert (await js.call("state", name="a")) == {"synced": True, "connected": True}
    doc = (await project_json(server, "film"))["doc"]
    assert len(doc["shots"]) == shots


async def test_only_the_writers_first_step2_may_exceed_the_message_limit(
    server: ServerProcess,
) -> None:
    await create_project(server, "film")
    backlog = _backlog("S")
    assert len(backlog) > 1.7 * MiB
    ws = await connect(server, "film")
    await _handshake(ws)
    await ws.send(sync_step2(backlog))
    await eventually(lambda: _shots_stored(server, "film", SHOTS))
    # The allowance is spent: a second large step 2 is an oversized message.
    assert await _refused(ws, sync_step2(_backlog("T", 150))) in (1009, None)

    # So is a large update, even as the first message after the handshake.
    ws = await connect(server, "film", max_size=None)
    await _handshake(ws)
    assert await _refused(ws, sync_update(_backlog("U", 150))) == 1009  # read, then refused
    await _shots_stored(server, "film", SHOTS)


async def _shots_stored(server: ServerProcess, project_id: str, count: int) -> None:
    assert len((await project_json(server, project_id))["doc"]["shots"]) == count


async def test_read_only_and_over_the_document_limit_stay_refused(
    start_server: StartServer,
) -> None:
    server, admin = await start_auth_server(
        start_server, BLACKBOARD_MAX_DOCUMENT_BYTES=str(int(1.5 * MiB))
    )
    await create_project(server, "film", token=admin)
    # A reader keeps the message limit, even for its handshake step 2.
    reader = await connect(server, "film", f"token={token('film', 'read', 'rita')}")
    await _handshake(reader)
    assert await _refused(reader, sync_step2(_backlog("R", 150))) in (1009, None)
    # A writer's step 2 over the document limit is refused by the transport.
    writer = await connect(server, "film", f"token={token('film', 'write', 'wes')}")
    await _handshake(writer)
    assert await _refused(writer, sync_step2(_backlog("W"))) in (1009, None)
    await _shots_stored_with(server, admin, 0)


async def _shots_stored_with(server: ServerProcess, admin: str, count: int) -> None:
    assert len((await project_json(server, "film", admin))["doc"]["shots"]) == count


async def test_posted_backlog_up_to_the_document_limit_is_accepted(
    start_server: StartServer,
) -> None:
    server = await start_server(env={"BLACKBOARD_MAX_DOCUMENT_BYTES": str(4 * MiB)})
    await create_project(server, "film")
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        response = await http.post("/api/projects/film/update", content=_backlog("S"))
        assert response.status_code == 200, response.text
        assert response.json()["changed"] is True
        too_big = await http.post("/api/projects/film/update", content=b"\x00" * (4 * MiB + 1))
        assert too_big.status_code == 413
        assert too_big.json()["error"] == "too_large"
    await _shots_stored(server, "film", SHOTS)
