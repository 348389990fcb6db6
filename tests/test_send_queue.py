"""The send-queue cap bounds a client's backlog, not one message: a document bigger than
the cap still syncs, while a client that stops reading is still closed (1013)."""

from __future__ import annotations

import asyncio

import httpx
import websockets
from pycrdt import Doc, Map, Text

from blackboard.sync.room.connection import Connection
from blackboard.sync.wire.protocol import SyncMessage, SyncType, decode_message, sync_step1
from tests.support.api import create_project
from tests.support.server import StartServer


class Stalled:
    """A channel whose peer never reads: every send waits forever."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        pass


async def test_one_message_over_the_cap_is_sent_but_a_backlog_is_not() -> None:
    channel = Stalled()
    conn = Connection(
        channel, project_id="p", actor="a", can_write=True, wants_acks=False, max_queue_bytes=1000
    )
    conn.send(b"x" * 5000)  # e.g. a big document's sync step 2
    await asyncio.sleep(0)  # one loop turn: the sender task sends at once
    assert conn.open and channel.sent == [b"x" * 5000]
    for _ in range(3):  # the client is stuck on it: these wait in the outbox
        conn.send(b"y" * 400)
    assert conn.open and conn.queued_bytes == 1200  # over the cap now
    conn.send(b"z")
    assert conn.close_code == 1013


async def test_a_document_bigger_than_the_send_queue_syncs(
    start_server: StartServer,
) -> None:
    server = await start_server(env={"BLACKBOARD_SEND_QUEUE_BYTES": "65536"})
    await create_project(server, "big")
    doc = Doc()
    with doc.transaction():
        for i in range(100):
            doc.get("shots", type=Map)[f"S{i:03d}"] = Map({"prompt": Text("rain " * 400)})
    update = doc.get_update()
    assert len(update) > 3 * 65536
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.post("/api/projects/big/update", content=update)
        assert response.status_code == 200, response.text
    async with websockets.connect(
        f"{server.ws}/sync/big", compression=None, max_size=None, open_timeout=10
    ) as ws:
        await ws.send(sync_step1(b"\x00"))
        while True:
            message = decode_message(await asyncio.wait_for(ws.recv(), 10))
            if isinstance(message, SyncMessage) and message.kind == SyncType.STEP2:
                break
    synced = Doc()
    synced.apply_update(message.payload)
    assert len(synced.get("shots", type=Map)) == 100
