"""`/sync/{project_id}`: where an update enters. Accepts the upgrade, checks the caller
and the project, joins the room, then hands each binary frame to the room.

Every refusal accepts first and then closes with a code, since stock clients retry a
refused upgrade forever but stop on a 44xx close.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from persistence.errors import LogFull, ProjectNotFound
from schemas.document import is_valid_id
from sync import close_codes
from sync.connection import Connection
from web.auth import Identity

log = logging.getLogger(__name__)
CLOSE_WAIT_S = 2.0


class StarletteChannel:
    """A Starlette WebSocket as a `sync.channel.Channel`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code, reason[:120])
        except Exception:  # already closed by the peer
            pass


async def sync_endpoint(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    identity: Identity = websocket.state.identity
    project_id = websocket.path_params["project_id"]
    await websocket.accept()
    channel = StarletteChannel(websocket)
    if not is_valid_id(project_id):
        await channel.close(close_codes.UNKNOWN_PROJECT, "unknown project")
        return
    connection = Connection(
        channel,
        project_id=project_id,
        actor=identity.actor,
        can_write=identity.can_write,
        wants_acks=websocket.query_params.get("ack") == "1",
        max_queue_bytes=services.settings.limits.send_queue_bytes,
    )
    try:
        room = await services.rooms.join(project_id, connection)
    except ProjectNotFound:
        connection.close(close_codes.UNKNOWN_PROJECT, "unknown project")
        await _closed(connection)
        return
    except Exception:
        log.exception("room %s: load failed", project_id)
        connection.close(close_codes.INTERNAL_ERROR, "project failed to load")
        await _closed(connection)
        return
    max_bytes = services.settings.limits.max_message_bytes
    try:
        while connection.open:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            frame = message.get("bytes")
            if frame is None:
                connection.close(close_codes.MALFORMED, "text frames are not part of the protocol")
                break
            if len(frame) > max_bytes:
                connection.close(close_codes.TOO_BIG, f"message exceeds {max_bytes} bytes")
                break
            try:
                room.receive(connection, frame)
            except LogFull as exc:
                connection.close(close_codes.TRY_AGAIN_LATER, str(exc))
    except Exception as exc:  # the socket broke mid-receive
        log.debug("connection %s: receive failed: %s", connection.id, exc)
    finally:
        room.leave(connection)
        connection.close(close_codes.NORMAL, "bye")
        await _closed(connection)


async def _closed(connection: Connection) -> None:
    try:
        await asyncio.wait_for(connection.closed.wait(), CLOSE_WAIT_S)
    except TimeoutError:
        pass


routes = [WebSocketRoute("/sync/{project_id}", sync_endpoint)]
