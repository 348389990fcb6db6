"""The socket's protocol promises, checked frame by frame with a raw client."""

from __future__ import annotations

import asyncio

import websockets
from pycrdt import Doc, Map

from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    Message,
    MessageType,
    SyncMessage,
    SyncType,
    ack_message,
    awareness_message,
    decode_awareness,
    decode_message,
    encode_awareness,
    sync_step1,
    sync_step2,
    sync_update,
)
from tests.support.api import create_project, project_json
from tests.support.server import ServerProcess


def _updates(count: int) -> list[bytes]:
    doc = Doc()
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    for i in range(count):
        doc.get("shots", type=Map)[f"S{i}"] = Map({"order": i})
    return out


async def _raw_until_quiet(ws: websockets.ClientConnection, quiet_s: float = 0.3) -> list[bytes]:
    frames = []
    while True:
        try:
            frames.append(await asyncio.wait_for(ws.recv(), quiet_s))
        except TimeoutError:
            return frames


async def _frames_until_quiet(ws: websockets.ClientConnection) -> list[Message]:
    return [decode_message(f) for f in await _raw_until_quiet(ws) if f[0] != MessageType.ACK]


async def test_handshake_comes_first_even_during_a_burst(server: ServerProcess) -> None:
    await create_project(server, "busy")
    writer = await websockets.connect(f"{server.ws}/sync/busy", compression=None)
    updates = _updates(400)

    async def write() -> None:
        for update in updates:
            await writer.send(sync_update(update))
            await asyncio.sleep(0)  # one loop turn: joiners interleave with the burst

    burst = asyncio.create_task(write())
    for _ in range(5):
        async with websockets.connect(f"{server.ws}/sync/busy", compression=None) as joiner:
            first = decode_message(await asyncio.wait_for(joiner.recv(), 5))
            assert isinstance(first, SyncMessage) and first.kind == SyncType.STEP1
    await burst
    await writer.close()


async def test_no_echo_to_the_sender(server: ServerProcess) -> None:
    await create_project(server, "echo")
    sender = await websockets.connect(f"{server.ws}/sync/echo", compression=None)
    other = await websockets.connect(f"{server.ws}/sync/echo", compression=None)
    await _frames_until_quiet(sender)
    await _frames_until_quiet(other)
    (update,) = _updates(1)
    await sender.send(sync_update(update))
    await sender.send(awareness_message(encode_awareness([AwarenessEntry(7, 1, '{"u":1}')])))
    got_by_other = await _frames_until_quiet(other)
    got_by_sender = await _frames_until_quiet(sender)
    assert [m.payload for m in got_by_other if isinstance(m, SyncMessage)] == [update]
    (aw,) = [m for m in got_by_other if isinstance(m, AwarenessMessage)]
    assert decode_awareness(aw.payload)[0].client_id == 7
    assert got_by_sender == []
    await sender.close()
    await other.close()


async def test_duplicate_update_is_not_logged_or_forwarded(server: ServerProcess) -> None:
    await create_project(server, "dup")
    sender = await websockets.connect(f"{server.ws}/sync/dup?ack=1", compression=None)
    other = await websockets.connect(f"{server.ws}/sync/dup", compression=None)
    await sender.send(sync_step1(b"\x00"))
    await sender.send(sync_step2(b"\x00\x00"))  # what a fresh client answers: nothing new
    await _frames_until_quiet(sender)
    await _frames_until_quiet(other)
    (update,) = _updates(1)
    for _ in range(3):
        await sender.send(sync_update(update))
    forwarded = [m for m in await _frames_until_quiet(other) if isinstance(m, SyncMessage)]
    assert len(forwarded) == 1
    # Acks are cumulative over update-bearing messages: step 2 and the three updates.
    acks = [f for f in await _raw_until_quiet(sender) if f[0] == MessageType.ACK]
    assert acks[-1] == ack_message(4)
    assert (await project_json(server, "dup"))["seq"] == 2  # creation + one new update
    await sender.close()
    await other.close()
