"""One socket to a project: handshake, local updates out, acks and remote updates in.

Used alone it is the simplest client (no replica, no reconnect): it observes its Doc and
sends every local change while connected; offline edits go out with the next handshake
(sync step 2). `BlackboardClient` drives one Session per connection through a
`SessionListener` instead, which decides what to send and keeps what arrives.

    async with Session("ws://127.0.0.1:8000", "film-1") as session:
        session.doc.get("shots", type=Map)["S1"] = Map({"title": "Opening"})
        await session.flush()
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Protocol
from urllib.parse import urlencode

import websockets
from pycrdt import Doc, Subscription, TransactionEvent

from blackboard.sync.client.errors import ConnectionClosed
from blackboard.sync.wire.protocol import (
    AwarenessMessage,
    MessageType,
    Reader,
    SyncMessage,
    SyncType,
    awareness_message,
    decode_message,
    sync_step1,
    sync_step2,
    sync_update,
)

REMOTE_ORIGIN = "blackboard-remote"
# The server's step 2 carries the whole document: up to its document limit (64 MiB by
# default) plus the message header.
DEFAULT_RECEIVE_BYTES = 64 * 1024 * 1024 + 1024


class SessionListener(Protocol):
    def on_step1(self, session: Session, state_vector: bytes) -> None:
        """The server asked for what it lacks: answer with `session.send_step2`."""

    def on_remote(self, update: bytes) -> None:
        """An update from the server was applied to the Doc."""

    def on_ack(self, session: Session, count: int) -> None:
        """The server committed the first `count` update-bearing messages."""


class Session:
    def __init__(
        self,
        server_url: str,
        project_id: str,
        doc: Doc | None = None,
        *,
        token: str | None = None,
        durable: bool = True,
        max_receive_bytes: int = DEFAULT_RECEIVE_BYTES,
        listener: SessionListener | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.project_id = project_id
        self.doc = doc if doc is not None else Doc()
        self.token = token
        self.durable = durable
        self.max_receive_bytes = max_receive_bytes
        self.listener = listener
        self.sent = 0  # update-bearing messages sent on this connection
        self.acked = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._ws: websockets.ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._synced = asyncio.Event()
        self._progress = asyncio.Event()
        self._subscription: Subscription | None = (
            self.doc.observe(self._on_local_change) if listener is None else None
        )

    @property
    def url(self) -> str:
        params = {"ack": "1"} if self.durable else {}
        if self.token:
            params["token"] = self.token
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.server_url}/sync/{self.project_id}{query}"

    @property
    def connected(self) -> bool:
        return self._ws is not None and self.close_code is None

    @property
    def synced(self) -> bool:
        return self.connected and self._synced.is_set()

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the socket and finish the handshake (both sides have each other's state)."""
        self.sent = self.acked = 0
        self.close_code, self.close_reason = None, ""
        self._synced.clear()
        self._ws = await websockets.connect(
            self.url, max_size=self.max_receive_bytes, compression=None, open_timeout=timeout
        )
        self._outbox = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_loop())
        self._sender = asyncio.create_task(self._send_loop())
        await self._ws.send(sync_step1(self.doc.get_state()))
        await self._wait(self._synced.wait(), timeout, "the handshake")

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until the server has committed every change sent so far."""
        if not self.durable:
            raise RuntimeError("flush() needs durable=True")
        while self.acked < self.sent:
            self._progress.clear()
            await self._wait(self._progress.wait(), timeout, "durable acks")

    async def drain(self) -> None:
        """Wait until every queued message was handed to the socket."""
        await self._wait(self._outbox.join(), None, "the send queue")

    async def wait_closed(self) -> tuple[int, str]:
        """Wait for the end of the connection; its close code and reason."""
        if self._reader is not None:
            await asyncio.wait({self._reader})  # neither cancels the reader nor raises
        return self.close_code or 1006, self.close_reason

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then close."""
        if self._ws is not None and self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout)
        if self._sender is not None:
            self._sender.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._ws = None

    async def __aenter__(self) -> Session:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def dispose(self) -> None:
        """Stop observing the Doc (call when the Doc outlives the session)."""
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None

    def send_update(self, update: bytes) -> int:
        """Queue one update; its number among this connection's update-bearing messages."""
        return self._send(sync_update(update))

    def send_step2(self, update: bytes) -> int:
        return self._send(sync_step2(update))

    def send_awareness(self, awareness_update: bytes) -> None:
        self._outbox.put_nowait(awareness_message(awareness_update))

    async def _wait(self, waiter: object, timeout: float | None, what: str) -> None:
        reader = self._reader
        assert reader is not None
        wait_task = asyncio.ensure_future(waiter)  # type: ignore[arg-type]
        done, _ = await asyncio.wait(
            {wait_task, reader}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if wait_task in done:
            return
        wait_task.cancel()
        if reader in done:
            raise ConnectionClosed(self.close_code, self.close_reason)
        raise TimeoutError(f"timed out waiting for {what}")

    def _on_local_change(self, event: TransactionEvent) -> None:
        if event.transaction.origin() == hash(REMOTE_ORIGIN) or not self.connected:
            return  # offline edits go out with the next handshake
        self.send_update(event.update)

    def _send(self, message: bytes) -> int:
        # Called from Doc observers, which cannot await: queue in order, send later.
        self.sent += 1
        self._outbox.put_nowait(message)
        return self.sent

    async def _send_loop(self) -> None:
        assert self._ws is not None
        while True:
            message = await self._outbox.get()
            try:
                await self._ws.send(message)
            finally:
                self._outbox.task_done()

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if isinstance(frame, str):
                    continue
                self._handle(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            code = self._ws.close_code if self._ws else None
            self.close_code = code if code is not None else 1006
            self.close_reason = (self._ws.close_reason if self._ws else None) or ""
            self._progress.set()
            if self._sender is not None:
                self._sender.cancel()  # nothing more can be sent on this socket

    def _handle(self, frame: bytes) -> None:
        if frame and frame[0] == MessageType.ACK:
            reader = Reader(frame)
            reader.varuint()
            self.acked = reader.varuint()
            self._progress.set()
            if self.listener is not None:
                self.listener.on_ack(self, self.acked)
            return
        message = decode_message(frame)
        if isinstance(message, SyncMessage):
            if message.kind == SyncType.STEP1:
                if self.listener is not None:
                    self.listener.on_step1(self, message.payload)
                else:
                    self.send_step2(self.doc.get_update(message.payload))
                return
            with self.doc.transaction(origin=REMOTE_ORIGIN):
                self.doc.apply_update(message.payload)
            if self.listener is not None:
                self.listener.on_remote(message.payload)
            if message.kind == SyncType.STEP2:
                self._synced.set()  # the server answered our step 1: we have its state
        elif isinstance(message, AwarenessMessage):
            pass  # presence is for live editors; agents do not track it
