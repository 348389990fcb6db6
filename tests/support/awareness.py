"""Raw sockets that set and watch presence (awareness), for the presence limit tests."""

from __future__ import annotations

import asyncio
import json

import websockets

from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    AwarenessMessage,
    awareness_message,
    decode_awareness,
    decode_message,
    encode_awareness,
    sync_step1,
)
from tests.support.auth import connect
from tests.support.server import ServerProcess

QUIET_S = 0.5  # presence goes out within a tick (50 ms); this is plenty on a busy machine


def states_message(*entries: tuple[int, int, object]) -> bytes:
    """An awareness message of (client id, clock, state) entries."""
    return awareness_message(
        encode_awareness([AwarenessEntry(c, clock, json.dumps(s)) for c, clock, s in entries])
    )


async def joined(
    server: ServerProcess, project_id: str, **options: object
) -> websockets.ClientConnection:
    """A socket past its handshake (the server's step 1 read)."""
    ws = await connect(server, project_id, **options)
    await ws.send(sync_step1(b"\x00"))
    await asyncio.wait_for(ws.recv(), 5)
    return ws


async def seen(ws: websockets.ClientConnection, quiet_s: float = QUIET_S) -> dict[int, str]:
    """Awareness entries received until the socket is quiet: client id -> state JSON."""
    found: dict[int, str] = {}
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), quiet_s)
        except TimeoutError:
            return found
        message = decode_message(frame)  # type: ignore[arg-type]
        if isinstance(message, AwarenessMessage):
            found.update((e.client_id, e.state_json) for e in decode_awareness(message.payload))
