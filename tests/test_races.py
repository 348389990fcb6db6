"""Races that lost data or hung in other servers, each reproduced against ours."""

from __future__ import annotations

import asyncio

import websockets
from pycrdt import Doc, Map

from blackboard.sync.client import Session
from blackboard.sync.wire.protocol import (
    SyncMessage,
    SyncType,
    decode_message,
    sync_step1,
    sync_update,
)
from tests.support.api import create_project, eventually, project_json
from tests.support.server import ServerProcess, StartServer


async def test_simultaneous_first_joiners_all_sync(server: ServerProcess) -> None:
    """pycrdt-websocket: one of two first clients of a new room could hang forever."""
    await create_project(server, "fresh")
    clients = [Session(server.ws, "fresh") for _ in range(12)]
    await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 15)
    for client in clients:
        assert client.doc.get("spec", type=Map)["title"] == "fresh"
    await asyncio.gather(*(c.close() for c in clients))


async def test_reconnect_during_unload_loses_nothing(
    start_server: StartServer,
) -> None:
    """Hocuspocus #971: a reconnect while the room unloads silently dropped updates."""
    server = await start_server(env={"BLACKBOARD_ROOM_IDLE_S": "0.02"})
    await create_project(server, "churn")
    for i in range(40):
        client = Session(server.ws, "churn", durable=False)
        await client.connect()
        # Everything written in earlier rounds is here, whatever the unload did.
        assert len(client.doc.get("tasks", type=Map)) == i
        client.doc.get("tasks", type=Map)[f"T{i}"] = Map({"kind": "render"})
        await client.close()  # no flush: the room unloads right behind us
        await asyncio.sleep(0.01 * (i % 4))  # reconnects at varied moments of the unload
    await server.stop()
    await server.restart()
    tasks = (await project_json(server, "churn"))["doc"]["tasks"]
    assert sorted(tasks) == sorted(f"T{i}" for i in range(40))


async def test_many_updates_then_immediate_disconnect_are_all_stored(
    server: ServerProcess,
) -> None:
    """pycrdt-websocket: 300 updates then a disconnect persisted 2 of 300. (uvicorn's
    default websockets implementation also dropped frames still unread at the close.)"""
    await create_project(server, "burst")
    source = Doc()
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    notes = source.get("approvals", type=Map)
    for i in range(1000):
        notes[f"A{i}"] = Map({"subject": f"take {i}"})
    async with websockets.connect(f"{server.ws}/sync/burst", compression=None) as ws:
        for update in updates:
            await ws.send(sync_update(update))
    # Closed at once, no ack asked for. A graceful restart must still find all.
    await server.stop()
    await server.restart()
    approvals = (await project_json(server, "burst"))["doc"]["approvals"]
    assert len(approvals) == 1000


async def test_dead_client_does_not_stop_broadcasts(server: ServerProcess) -> None:
    """pycrdt-websocket: one raising send stopped a room's broadcasts to everyone."""
    await create_project(server, "dead")
    dead = await websockets.connect(f"{server.ws}/sync/dead", compression=None)
    await dead.recv()  # handshake received: it is in the room
    dead.transport.abort()  # vanish without a close frame

    receiver = await websockets.connect(f"{server.ws}/sync/dead", compression=None)
    await receiver.send(sync_step1(b"\x00"))
    writer = Session(server.ws, "dead")
    await writer.connect()
    for i in range(5):
        writer.doc.get("shots", type=Map)[f"S{i}"] = Map({"title": str(i)})
    await writer.flush()

    received = Doc()

    async def receiver_has_all() -> None:
        while len(received.get("shots", type=Map)) < 5:
            frame = await asyncio.wait_for(receiver.recv(), 5)
            message = decode_message(frame)
            if isinstance(message, SyncMessage) and message.kind != SyncType.STEP1:
                received.apply_update(message.payload)

    await asyncio.wait_for(receiver_has_all(), 10)
    assert sorted(received.get("shots", type=Map)) == [f"S{i}" for i in range(5)]

    async def server_has_all() -> None:
        assert len((await project_json(server, "dead"))["doc"]["shots"]) == 5

    await eventually(server_has_all)
    await receiver.close()
    await writer.close()
