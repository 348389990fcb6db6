"""`/sync/{project_id}`: where an update enters. Accepts the upgrade, checks the caller
and the project, joins the room, then hands each binary frame to the room.

Every refusal accepts first and then closes with a code, since stock clients retry a
refused upgrade forever but stop on a 44xx close. The token, the Origin and the actor's
socket count are checked before this runs (`web/auth.py`); here the token's expiry closes
the socket (4401), a sender over the message rate is throttled, then closed (4429).

A message over the message limit closes the socket (1009), except the handshake's sync
step 2 from a connection that may write: an offline backlog, which a stock client sends
whole, may be as large as the document limit. The transport (`blackboard.web.transport`) holds the
larger limit only from the server's step 1 until that step 2 arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from blackboard.persistence.errors import LogFull, ProjectNotFound
from blackboard.schemas.document import is_valid_id
from blackboard.sync.room.connection import CLOSE_TIMEOUT_S, Connection
from blackboard.sync.room.metrics import REFUSALS, ServerMetrics
from blackboard.sync.room.rate_limit import MessageRateLimit
from blackboard.sync.room.room import Room
from blackboard.sync.wire import close_codes
from blackboard.sync.wire.protocol import is_sync_step2
from blackboard.web.auth import Identity
from blackboard.web.settings import Limits
from blackboard.web.socket_reader import FRAME_READER_EXTENSION, FrameReader
from blackboard.web.socket_writer import FRAME_WRITER_EXTENSION, FrameWriter
from blackboard.web.transport import MESSAGE_LIMIT_EXTENSION, SetMessageLimit

log = logging.getLogger(__name__)
CLOSE_WAIT_S = CLOSE_TIMEOUT_S + 1.0
STEP2_FRAMING_BYTES = 16  # message type, sync type and the length before the update


class StarletteChannel:
    """A Starlette WebSocket as a `blackboard.sync.room.channel.Channel`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code, reason[:120])
        except Exception:  # already closed by the peer
            pass


class WriterChannel(StarletteChannel):
    """Frames written by the socket's `FrameWriter` (not through ASGI), at once when it
    has room (a `DirectChannel`); the close still goes through ASGI, after the frames
    queued before it."""

    offer: Callable[[bytes], bool]  # the writer's own: no call in between

    def __init__(self, websocket: WebSocket, writer: FrameWriter) -> None:
        super().__init__(websocket)
        self._writer = writer
        self.offer = writer.offer

    async def send(self, data: bytes) -> None:
        await self._writer.send(data)

    async def close(self, code: int, reason: str) -> None:
        self._writer.flush()
        await super().close(code, reason)


def socket_channel(websocket: WebSocket) -> StarletteChannel:
    """The socket's channel: its `FrameWriter` under our uvicorn protocol (`blackboard
    serve`), else ASGI (e.g. an in-process test client)."""
    writer = websocket.scope.get("extensions", {}).get(FRAME_WRITER_EXTENSION)
    return StarletteChannel(websocket) if writer is None else WriterChannel(websocket, writer)


async def sync_endpoint(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    identity: Identity = websocket.state.identity
    project_id = websocket.path_params["project_id"]
    await websocket.accept()
    channel = socket_channel(websocket)
    if not is_valid_id(project_id):
        await channel.close(close_codes.UNKNOWN_PROJECT, "unknown project")
        services.metrics.observe_close(close_codes.UNKNOWN_PROJECT)
        return
    connection = Connection(
        channel,
        project_id=project_id,
        actor=identity.actor,
        can_write=identity.can_write,
        wants_acks=websocket.query_params.get("ack") == "1",
        max_queue_bytes=services.settings.limits.send_queue_bytes,
    )
    limits: Limits = services.settings.limits
    backlog = _BacklogAllowance(websocket, limits) if identity.can_write else None
    try:
        room = await services.rooms.join(project_id, connection)
    except ProjectNotFound:
        connection.close(close_codes.UNKNOWN_PROJECT, "unknown project")
        await _closed(connection, services.metrics)
        return
    except Exception:
        log.exception("room %s: load failed", project_id, extra=connection.log_ids)
        connection.close(close_codes.INTERNAL_ERROR, "project failed to load")
        await _closed(connection, services.metrics)
        return
    expiry = _close_on_expiry(connection, identity.expires_at)
    inbound = _Inbound(room, connection, limits, backlog)
    reader = asyncio.create_task(_read(websocket, connection, inbound))
    closing = asyncio.create_task(connection.closing.wait())
    try:
        await asyncio.wait({reader, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, closing):
            task.cancel()
        if expiry is not None:
            expiry.cancel()
        failure = reader.exception() if reader.done() and not reader.cancelled() else None
        if failure is not None:
            inbound.failed(failure)
        room.leave(connection)
        if not connection.closing.is_set():  # the peer left; else keep the server's code
            connection.close(close_codes.NORMAL, "bye")
        await _closed(connection, services.metrics)


class _BacklogAllowance:
    """The larger limit for a writer's first sync step 2, raised before the server's step 1
    (which the client's step 2 answers) and lowered once that step 2 has arrived."""

    def __init__(self, websocket: WebSocket, limits: Limits) -> None:
        self.pending = True
        self.max_bytes = limits.max_document_bytes + STEP2_FRAMING_BYTES
        self._limits = limits
        # Absent outside uvicorn (e.g. an in-process test client): no transport limit.
        self._set: SetMessageLimit | None = websocket.scope.get("extensions", {}).get(
            MESSAGE_LIMIT_EXTENSION
        )
        if self._set is not None:
            self._set(max(self.max_bytes, limits.max_message_bytes))

    def admits(self, frame: bytes) -> bool:
        """Whether `frame` is the step 2 this allows; the allowance ends with it."""
        if not (self.pending and is_sync_step2(frame)):
            return False
        self.pending = False
        if self._set is not None:
            self._set(self._limits.max_message_bytes)
        return len(frame) <= self.max_bytes


class _Inbound:
    """What becomes of each binary message, whichever way it is read: the limits, then
    the room."""

    def __init__(
        self,
        room: Room,
        connection: Connection,
        limits: Limits,
        backlog: _BacklogAllowance | None,
    ) -> None:
        self._room = room
        self._connection = connection
        self._limits = limits
        self._backlog = backlog
        self._loop = asyncio.get_running_loop()
        self._rate = MessageRateLimit(
            limits.messages_per_second, limits.rate_window_s, self._loop.time()
        )

    def __call__(self, frame: bytes) -> float:
        """Hand `frame` to the room; return how long to stop reading the socket after
        it (0: not at all), so that TCP pushes back on a sender over the rate."""
        connection = self._connection
        if connection.closing.is_set():
            return 0.0  # the server decided to close: what follows is ignored
        backlog = self._backlog
        handshake_step2 = backlog is not None and backlog.admits(frame)
        max_bytes = self._limits.max_message_bytes
        if len(frame) > max_bytes and not handshake_step2:
            connection.close(close_codes.TOO_BIG, f"message exceeds {max_bytes} bytes")
            return 0.0
        wait = self._rate.admit(self._loop.time())
        if wait is None:
            connection.close(close_codes.RATE_LIMITED, "message rate limit exceeded")
            return 0.0
        try:
            self._room.receive(connection, frame)
        except LogFull as exc:
            connection.close(close_codes.TRY_AGAIN_LATER, str(exc))
        return wait

    def failed(self, exc: BaseException) -> None:
        """Reading failed: the connection ends (the endpoint leaves the room)."""
        connection = self._connection
        log.debug("connection %s: receive failed: %s", connection.id, exc, extra=connection.log_ids)
        connection.close(close_codes.NORMAL, "bye")


async def _read(websocket: WebSocket, connection: Connection, inbound: _Inbound) -> None:
    """Hand each binary message to `inbound` until the peer leaves or the server closes
    the socket: straight from the transport when it offers a `FrameReader` (`blackboard
    serve`), else through ASGI (e.g. an in-process test client), which also brings what
    the reader leaves to it (text messages, the disconnect)."""
    reader: FrameReader | None = websocket.scope.get("extensions", {}).get(FRAME_READER_EXTENSION)
    if reader is not None:
        reader.start(inbound, inbound.failed)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect" or connection.closing.is_set():
                return
            frame = message.get("bytes")
            if frame is None:
                connection.close(close_codes.MALFORMED, "text frames are not part of the protocol")
                return
            wait = inbound(frame)
            if wait:
                # Not reading pauses this socket (uvicorn stops reading it), so TCP pushes back.
                await asyncio.sleep(wait)
    finally:
        if reader is not None:
            reader.stop()


def _close_on_expiry(
    connection: Connection, expires_at: float | None
) -> asyncio.TimerHandle | None:
    if expires_at is None:
        return None
    return asyncio.get_running_loop().call_later(
        max(0.0, expires_at - time.time()),
        connection.close,
        close_codes.UNAUTHORIZED,
        "token expired",
    )


async def _closed(connection: Connection, metrics: ServerMetrics) -> None:
    try:
        await asyncio.wait_for(connection.closed.wait(), CLOSE_WAIT_S)
    except TimeoutError:
        pass
    metrics.observe_close(connection.close_code)
    if connection.close_code in REFUSALS:
        log.info(
            "connection %s closed: %s %s",
            connection.id,
            connection.close_code,
            REFUSALS[connection.close_code],
            extra=connection.log_ids,
        )


routes = [WebSocketRoute("/sync/{project_id}", sync_endpoint)]
