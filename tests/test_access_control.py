"""Access control over real sockets and HTTP: every refusal path gives its status or
close code before any document byte, and leaves the document and its log unchanged."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys

import httpx
import pytest
import websockets
from pycrdt import Doc, Map

from blackboard.sync.client import ConnectionClosed, Session
from blackboard.sync.wire.protocol import (
    MessageType,
    decode_message,
    permission_denied,
    sync_step1,
    sync_update,
)
from blackboard.web.tokens import TokenExpired, verify
from tests.support.api import (
    bearer,
    committed_doc,
    create_project,
    eventually,
    history,
    project_json,
)
from tests.support.auth import (
    KEYRING,
    SECRET,
    connect,
    start_auth_server,
    token,
    until_closed,
)
from tests.support.js import JsClients
from tests.support.server import ROOT, ServerProcess, StartServer


def _update(key: str, value: object) -> bytes:
    doc = Doc()
    doc.get("shots", type=Map)[key] = Map({"title": value})
    return doc.get_update()


async def _state(server: ServerProcess, project_id: str, admin: str) -> tuple[int, dict, list]:
    body = await project_json(server, project_id, admin)
    return body["seq"], body["doc"], await history(server, project_id, admin)


async def test_open_mode_says_so_loudly(start_server: StartServer) -> None:
    open_server = await start_server()
    secured, _ = await start_auth_server(start_server)
    assert "WARNING" in open_server.logs() and "OPEN MODE" in open_server.logs()
    assert "OPEN MODE" not in secured.logs()


async def test_http_needs_a_fitting_token(start_server: StartServer) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    await create_project(server, "other", token=admin)
    before = await _state(server, "film", admin)
    update = _update("S1", "x")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200  # the one open path

        refusals = {
            "no token": (None, 401),
            "garbage": ("not-a-token", 401),
            "expired": (token("film", "write", "ana", ttl_s=0), 401),
            "another project": (token("other", "write", "ana"), 403),
            "read token writing": (token("film", "read", "ana"), 403),
        }
        for name, (credential, status) in refusals.items():
            response = await http.post(
                "/api/projects/film/update", content=update, headers=bearer(credential)
            )
            assert response.status_code == status, name
            assert response.json()["error"] in ("unauthorized", "forbidden"), name
        missing = await http.get("/api/projects/film")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert (await http.get("/readyz")).status_code == 401
        foreign = await http.get("/api/projects/film", headers=bearer(token("other", "read", "a")))
        assert foreign.status_code == 403
        assert "film" not in foreign.text  # no document byte

        # Reads with a read token, by header or query parameter.
        reader = token("film", "read", "ana")
        assert (await http.get("/api/projects/film", headers=bearer(reader))).status_code == 200
        assert (await http.get(f"/api/projects/film/update?token={reader}")).status_code == 200
        # Listing every project needs a token for every project.
        assert (await http.get("/api/projects", headers=bearer(reader))).status_code == 403
        assert (await http.get("/api/projects", headers=bearer(admin))).status_code == 200

        # Creating a project needs admin, for that project (or *).
        body = {"project_id": "new", "title": "New", "budget_total": 10}
        for credential in (token("new", "write", "a"), token("film", "admin", "a")):
            response = await http.post("/api/projects", json=body, headers=bearer(credential))
            assert response.status_code == 403
        assert (await http.get("/api/projects/new", headers=bearer(admin))).status_code == 404
        created = await http.post(
            "/api/projects", json=body, headers=bearer(token("new", "admin", "a"))
        )
        assert created.status_code == 201

    assert await _state(server, "film", admin) == before


async def test_socket_refusals_close_before_any_document_byte(start_server: StartServer) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    before = await _state(server, "film", admin)
    refusals = {
        "no token": ("", 4401),
        "garbage": ("token=abc.def.ghi", 4401),
        "expired": (f"token={token('film', 'write', 'ana', ttl_s=0)}", 4401),
        "another project": (f"token={token('other', 'write', 'ana')}", 4403),
        "alg none": (f"token={_alg_none_token()}", 4401),
        "too long": ("token=" + "a" * 5000, 4401),
    }
    for name, (query, code) in refusals.items():
        ws = await connect(server, "film", query)
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(sync_update(_update("S1", name)))  # nothing of it is read
        closed_with, _, frames = await until_closed(ws)
        assert (closed_with, frames) == (code, []), name
    unknown = await connect(server, "nope", f"token={admin}")
    assert (await until_closed(unknown))[::2] == (4404, [])
    assert await _state(server, "film", admin) == before


async def test_query_string_tokens_never_reach_the_logs(start_server: StartServer) -> None:
    server, admin = await start_auth_server(start_server, BLACKBOARD_LOG_LEVEL="info")
    await create_project(server, "film", token=admin)
    secret_token = token("film", "read", "ana")
    ws = await connect(server, "film", f"token={secret_token}")
    await ws.send(sync_step1(b"\x00"))
    assert await asyncio.wait_for(ws.recv(), 5)
    await ws.close()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        assert (await http.get(f"/api/projects/film?token={secret_token}")).status_code == 200

    def redacted() -> None:
        logs = server.logs()
        assert logs.count("token=<redacted>") >= 2  # the socket and the request
        assert secret_token.split(".")[2] not in logs

    await eventually(redacted)


def _alg_none_token() -> str:
    valid = token("film", "admin", "mallory")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    return f"{header.decode()}.{valid.split('.')[1]}."


async def test_read_token_syncs_but_its_writes_are_refused(start_server: StartServer) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    async with Session(server.ws, "film", token=token("film", "write", "ed")) as writer:
        shots = writer.doc.get("shots", type=Map)
        shots["S1"] = Map({"title": "Opening"})
        shots["S2"] = Map({"title": "Cut"})
        await writer.flush()
        del shots["S2"]  # the document now has a delete set a reader will echo back
        await writer.flush()
    before = await _state(server, "film", admin)

    # A reader syncs (its step 2 carries only deletes the server has: not a write) ...
    reader = Session(server.ws, "film", token=token("film", "read", "rita"))
    await reader.connect()
    assert reader.doc.get("shots", type=Map).to_py() == {"S1": {"title": "Opening"}}
    await asyncio.sleep(0.3)  # a window for a wrongful close (nothing to wait for)
    assert reader.connected
    # ... then writes: closed 4403, and nothing changed.
    reader.doc.get("shots", type=Map)["S3"] = Map({"title": "Mine"})
    with pytest.raises(ConnectionClosed) as closed:
        await reader.flush()
    assert closed.value.code == 4403
    # Frame by frame: the handshake, then the reason (auth message, permission denied).
    raw = await connect(server, "film", f"token={token('film', 'read', 'rita')}")
    await raw.send(sync_step1(b"\x00"))
    await raw.send(sync_update(_update("S4", "Mine too")))
    code, reason, frames = await until_closed(raw)
    assert (code, reason) == (4403, "read-only token: writes are not allowed")
    assert frames[-1] == permission_denied("read-only token: writes are not allowed")
    assert all(f[0] != MessageType.AUTH for f in frames[:-1])
    assert await _state(server, "film", admin) == before


async def test_stock_js_reader_syncs_then_is_refused_on_write(
    start_server: StartServer, js: JsClients
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    await js.connect("w", server.ws, "film", token=token("film", "write", "wes"))
    await js.call("set", name="w", path=["shots", "S1"], value={"title": "Opening"})
    await js.call("set", name="w", path=["shots", "S2"], value={"title": "Gone"})
    await js.call("delete", name="w", path=["shots", "S2"])

    async def stored() -> None:
        expected = {"S1": {"title": "Opening"}}
        assert (await project_json(server, "film", admin))["doc"]["shots"] == expected
        assert (await committed_doc(server, "film", admin))["shots"] == expected  # in the log

    await eventually(stored)
    before = await _state(server, "film", admin)
    reply = await js.connect("r", server.ws, "film", token=token("film", "read", "rita"))
    assert reply["synced"] and reply["closes"] == []
    await js.call("waitFor", name="r", path=["shots"], value={"S1": {"title": "Opening"}})
    await js.call("set", name="r", path=["shots", "S9"], value={"title": "Mine"})

    async def refused() -> None:
        closes = await js.call("closes", name="r")
        assert closes and closes[0]["code"] == 4403

    await eventually(refused)
    assert await _state(server, "film", admin) == before


async def test_actor_of_the_token_is_on_every_update_correction_and_ledger_row(
    start_server: StartServer,
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    async with Session(server.ws, "film", token=token("film", "write", "agent-7")) as c:
        c.doc.get("shots", type=Map)["S1"] = Map({"title": "Opening", "duration_s": "12"})
        await c.flush()  # "12" breaks a rule: repaired, and recorded as a correction
    editor = bearer(token("film", "write", "editor-2"))
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.post(
            "/api/projects/film/update", content=_update("S2", "Chase"), headers=editor
        )
        assert response.status_code == 200
        op = {"op": "charge", "amount": 5, "idempotency_key": "k1"}
        charged = await http.post("/api/projects/film/budget/ops", json=op, headers=editor)
        assert charged.status_code == 200, charged.text
        corrections = await http.get("/api/projects/film/corrections", headers=bearer(admin))
        ledger = await http.get("/api/projects/film/budget/ledger", headers=bearer(admin))
    actors = [actor for _, actor in await history(server, "film", admin)]
    assert actors[0] == "root"  # who created the project
    assert {"agent-7", "editor-2"} <= set(actors) <= {"root", "agent-7", "editor-2", "server"}
    assert [(c["path"], c["actor"]) for c in corrections.json()["items"]] == [
        ("shots/S1/duration_s", "agent-7")
    ]
    assert [(row["op"], row["actor"]) for row in ledger.json()["items"]][-1] == (
        "charge",
        "editor-2",
    )


async def test_budget_topup_needs_admin(start_server: StartServer) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        before = (await http.get("/api/projects/film/budget", headers=bearer(admin))).json()
        topup = {"op": "topup", "amount": 100, "idempotency_key": "t1"}
        writer = bearer(token("film", "write", "wes"))
        refused = await http.post("/api/projects/film/budget/ops", json=topup, headers=writer)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        reader = bearer(token("film", "read", "rita"))
        charge = {"op": "charge", "amount": 1, "idempotency_key": "c1"}
        read_only = await http.post("/api/projects/film/budget/ops", json=charge, headers=reader)
        assert read_only.status_code == 403
        assert (await http.get("/api/projects/film/budget", headers=bearer(admin))).json() == (
            before
        )
        owner = bearer(token("film", "admin", "olga"))
        accepted = await http.post("/api/projects/film/budget/ops", json=topup, headers=owner)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["actor"] == "olga"


async def test_expiry_closes_the_socket_and_a_fresh_token_reconnects(
    start_server: StartServer,
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    client = Session(server.ws, "film", token=token("film", "write", "ana", ttl_s=2))
    await client.connect()
    started = asyncio.get_running_loop().time()
    await eventually(lambda: _assert_equal(client.connected, False), timeout=10)
    assert client.close_code == 4401
    assert asyncio.get_running_loop().time() - started < 5  # at expiry, not a minute later
    client.token = token("film", "write", "ana")
    await client.connect()
    client.doc.get("shots", type=Map)["S1"] = Map({"title": "after"})
    await client.flush()
    await client.close()
    assert (await project_json(server, "film", admin))["doc"]["shots"]["S1"]["title"] == "after"


async def test_origin_allowlist_for_browser_sockets(start_server: StartServer) -> None:
    server, admin = await start_auth_server(
        start_server, BLACKBOARD_ALLOWED_ORIGINS="https://studio.example, https://b.example/"
    )
    await create_project(server, "film", token=admin)
    query = f"token={admin}"
    foreign = await connect(server, "film", query, origin="https://evil.example")
    assert (await until_closed(foreign))[::2] == (4403, [])
    for origin in ("https://studio.example", "https://b.example", None):  # None: not a browser
        ws = await connect(server, "film", query, origin=origin)
        await ws.send(sync_step1(b"\x00"))
        assert decode_message(await asyncio.wait_for(ws.recv(), 5))  # the handshake
        await ws.close()


async def test_connections_per_actor_are_capped(start_server: StartServer) -> None:
    server, admin = await start_auth_server(start_server, BLACKBOARD_MAX_CONNECTIONS_PER_ACTOR="2")
    await create_project(server, "film", token=admin)
    ana = f"token={token('film', 'read', 'ana')}"
    first, second = await connect(server, "film", ana), await connect(server, "film", ana)
    third = await connect(server, "film", ana)
    assert (await until_closed(third))[::2] == (4429, [])
    other = await connect(server, "film", f"token={token('film', 'read', 'bob')}")
    await other.send(sync_step1(b"\x00"))
    assert await asyncio.wait_for(other.recv(), 5)
    await first.close()

    async def slot_freed() -> None:  # the server sees the close a moment later
        again = await connect(server, "film", ana)
        try:
            await again.send(sync_step1(b"\x00"))
            assert await asyncio.wait_for(again.recv(), 5)
        except websockets.ConnectionClosed as closed:
            raise AssertionError(f"still refused: {closed}") from None
        finally:
            await again.close()

    await eventually(slot_freed)
    await second.close()
    await other.close()


def test_token_command_prints_the_token_alone() -> None:
    command = [
        sys.executable,
        "-m",
        "blackboard.web.cli",
        "token",
        "film",
        "--role",
        "read",
        "--actor",
        "ana",
    ]
    options = {
        "cwd": ROOT,
        "env": {"BLACKBOARD_AUTH_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        "capture_output": True,
        "text": True,
        "check": True,
    }
    run = subprocess.run(command, **options)  # type: ignore[call-overload]
    [printed] = run.stdout.splitlines()
    claims = verify(KEYRING, printed)
    assert (claims.project, claims.role, claims.actor) == ("film", "read", "ana")
    expired = subprocess.run([*command, "--ttl", "0"], **options)  # type: ignore[call-overload]
    with pytest.raises(TokenExpired):
        verify(KEYRING, expired.stdout.strip())
    unset = subprocess.run(command, **{**options, "env": {"PATH": "/usr/bin:/bin"}, "check": False})  # type: ignore[call-overload]
    assert unset.returncode != 0 and unset.stdout == ""
    assert "BLACKBOARD_AUTH_SECRET" in unset.stderr


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected
