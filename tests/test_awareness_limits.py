"""Presence is bounded (DESIGN.md section 2): a few client ids per connection, a bounded
state size, a bounded number of states per room, removed ids forgotten after 30 s, and a
snapshot never sent as one message over the message limit. Real server processes (raw
sockets and stock JS clients), except the 30 s expiry, which runs on a fake clock."""

from __future__ import annotations

import httpx

from blackboard.sync.room.awareness import AwarenessLimits, AwarenessStates
from blackboard.sync.wire.protocol import AwarenessEntry
from tests.support.api import create_project, eventually
from tests.support.auth import until_closed
from tests.support.awareness import joined, seen, states_message
from tests.support.js import JsClients
from tests.support.server import ServerProcess, StartServer


async def _presence(server: ServerProcess, project_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get(f"/api/projects/{project_id}/presence")
        assert response.status_code == 200
        return [client for entry in response.json()["instances"] for client in entry["clients"]]


async def test_a_connection_claiming_many_client_ids_is_closed_and_relays_nothing(
    server: ServerProcess,
) -> None:
    await create_project(server, "film")
    watcher = await joined(server, "film")
    await seen(watcher)
    honest = await joined(server, "film")
    # Four ids on one connection are allowed (a Yjs client has one).
    await honest.send(states_message(*((i, 1, {"user": i}) for i in range(1, 5))))
    assert set(await seen(watcher)) == {1, 2, 3, 4}

    flooder = await joined(server, "film")
    await flooder.send(states_message(*((i, 1, {"user": i}) for i in range(100, 10_100))))
    code, reason, _ = await until_closed(flooder)
    assert (code, reason) == (4400, "more than 4 awareness client ids")
    assert await seen(watcher) == {}  # nothing of it was stored or relayed
    assert {c["client_id"] for c in await _presence(server, "film")} == {1, 2, 3, 4}

    # A fifth id on the honest connection: the same, and its four states are removed.
    await honest.send(states_message((5, 1, {"user": 5})))
    assert (await until_closed(honest))[0] == 4400
    assert await seen(watcher) == {i: "null" for i in range(1, 5)}
    await watcher.close()


async def test_oversized_states_are_dropped_and_the_room_is_capped(
    start_server: StartServer,
) -> None:
    server = await start_server(
        env={
            "BLACKBOARD_MAX_AWARENESS_STATE_BYTES": "1000",
            "BLACKBOARD_MAX_AWARENESS_STATES_PER_ROOM": "3",
        }
    )
    await create_project(server, "film")
    watcher = await joined(server, "film")
    clients = [await joined(server, "film") for _ in range(4)]
    await clients[0].send(states_message((1, 1, {"note": "x" * 2000})))
    assert await seen(watcher) == {}  # too big: dropped, the connection carries on
    for n, ws in enumerate(clients, start=1):
        await ws.send(states_message((n, 2, {"user": n})))
    assert set(await seen(watcher)) == {1, 2, 3}  # the room holds three
    await clients[0].close()
    assert await seen(watcher) == {1: "null"}
    await clients[3].send(states_message((4, 3, {"user": 4})))  # its next renewal now fits
    assert await seen(watcher) == {4: '{"user": 4}'}
    for ws in (watcher, *clients[1:]):
        await ws.close()


async def test_a_big_snapshot_arrives_in_messages_under_the_message_limit(
    server: ServerProcess,
) -> None:
    await create_project(server, "film")
    owners = [await joined(server, "film") for _ in range(24)]
    for n, ws in enumerate(owners, start=1):
        await ws.send(states_message((n, 1, {"note": "x" * 60_000})))  # 24 x 60 KB: 1.4 MB

    async def the_room_holds_all() -> None:
        states = [client["state"] for client in await _presence(server, "film")]
        assert sum("note" in (state or {}) for state in states) == 24

    await eventually(the_room_holds_all)
    # websockets' default limit is 1 MiB per message, like pycrdt's provider.
    newcomer = await joined(server, "film", max_size=2**20)
    assert set(await seen(newcomer)) == set(range(1, 25))
    for ws in (newcomer, *owners):
        await ws.close()


async def test_stock_clients_keep_their_presence(server: ServerProcess, js: JsClients) -> None:
    """Stock y-websocket clients echo every awareness change they receive (many client
    ids per message): that is not claiming ids."""
    await create_project(server, "film")
    names = [f"c{i}" for i in range(6)]
    for name in names:
        await js.connect(name, server.ws, "film")
        await js.call("setAwareness", name=name, state={"user": name})

    async def everyone_sees_everyone() -> None:
        for name in names:
            states = await js.call("awareness", name=name)
            assert sorted(s["user"] for s in states.values()) == sorted(set(names) - {name})

    await eventually(everyone_sees_everyone)
    for name in names:
        assert await js.call("closes", name=name) == []
    assert len(await _presence(server, "film")) == len(names)


def test_removed_ids_are_forgotten_after_30_s() -> None:
    now = [0.0]
    states = AwarenessStates(AwarenessLimits(), clock=lambda: now[0])
    states.apply([AwarenessEntry(i, 1, "{}") for i in range(1_000)])
    states.remove(set(range(1_000)))
    assert (len(states), states.removed_count) == (0, 1_000)
    # Within 30 s a late echo of a removed state does not bring it back.
    now[0] = 29.0
    assert states.apply([AwarenessEntry(7, 1, "{}")]) == []
    now[0] = 30.5
    assert states.apply([]) == []
    assert states.removed_count == 0
    # A removal of an id never seen costs nothing.
    assert states.apply([AwarenessEntry(5_000, 9, "null")]) == []
    assert states.removed_count == 0


def test_removed_ids_are_capped_like_the_room() -> None:
    states = AwarenessStates(AwarenessLimits(states_per_room=10))
    for i in range(100):
        states.apply([AwarenessEntry(i, 1, "{}")])
        states.apply([AwarenessEntry(i, 2, "null")])
    assert (len(states), states.removed_count) == (0, 10)
