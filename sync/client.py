"""The Python client for agents: keep a local pycrdt Doc in sync with a project.

An agent may edit its Doc while disconnected; on `connect()` the handshake sends the
server what it lacks (sync step 2) and receives what the agent lacks. With durable acks
on (the default), `flush()` returns once every local change is committed on the server.

    async with BlackboardClient("ws://127.0.0.1:8000", "film-1") as client:
        client.doc.get("shots", type=Map)["S1"] = Map({"title": "Opening"})
        await client.flush()
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlencode

import websockets
from pycrdt import Doc, Subscription, TransactionEvent

from sync.protocol import (
    AwarenessMessage,
    MessageType,
    Reader,
    SyncMessage,
    SyncType,
    decode_message,
    sync_step1,
    sync_step2,
    sync_update,
)

_REMOTE = "blackboard-remote"


class ConnectionClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason}")
        self.code = code
        self.reason = reason


class BlackboardClient:
    def __init__(
        self,
        server_url: str,
        project_id: str,
        doc: Doc | None = None,
        *,
        token: str | None = None,
        durable: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.project_id = project_id
        self.doc = doc if doc is not None else Doc()
        self.token = token
        self.durable = durable
        self.max_message_bytes = max_message_bytes
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
        self._subscription: Subscription = self.doc.observe(self._on_local_change)

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

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the socket and finish the handshake (both sides have each other's state)."""
        self.sent = self.acked = 0
        self.close_code, self.close_reason = None, ""
        self._synced.clear()
        self._ws = await websockets.connect(
            self.url, max_size=self.max_message_bytes, compression=None, open_timeout=timeout
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

    async def __aenter__(self) -> BlackboardClient:
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
        """Stop observing the Doc (call when the Doc outlives the client)."""
        self.doc.unobserve(self._subscription)

    async def _wait(self, waiter: object, timeout: float, what: str) -> None:
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
        if event.transaction.origin() == hash(_REMOTE) or not self.connected:
            return  # offline edits go out with the next handshake
        self._send(sync_update(event.update))

    def _send(self, message: bytes) -> None:
        # Called from Doc observers, which cannot await: queue in order, send later.
        self.sent += 1
        self._outbox.put_nowait(message)

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

    def _handle(self, frame: bytes) -> None:
        if frame and frame[0] == MessageType.ACK:
            reader = Reader(frame)
            reader.varuint()
            self.acked = reader.varuint()
            self._progress.set()
            return
        message = decode_message(frame)
        if isinstance(message, SyncMessage):
            if message.kind == SyncType.STEP1:
                self._send(sync_step2(self.doc.get_update(message.payload)))
                return
            with self.doc.transaction(origin=_REMOTE):
                self.doc.apply_update(message.payload)
            if message.kind == SyncType.STEP2:
                self._synced.set()  # the server answered our step 1: we have its state
        elif isinstance(message, AwarenessMessage):
            pass  # presence is for live editors; agents do not track it
