"""The offline-first client for agents (DESIGN.md section 10).

    client = BlackboardClient("ws://127.0.0.1:8000", "film-1", replica="agent.db")
    await client.start()
    await client.wait_synced()
    client.doc.get("shots", type=Map)["S1"] = Map({"title": "Opening"})
    await client.flushed()  # committed on the server
    await client.stop()

Every local transaction is written to the replica inside its Doc observer, so it is on
disk when the edit returns, and stays there until the server acknowledges it (type-100
acks). Local updates go out merged into messages under the server's message limit, so a
backlog of any size syncs; the connection reconnects by itself with backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import websockets
from pycrdt import Doc, TransactionEvent, merge_updates

from blackboard.sync.authority.idempotency import KEY_RETENTION_S
from blackboard.sync.client.backoff import Backoff
from blackboard.sync.client.calls import Budget, CallQueue, Leases
from blackboard.sync.client.credentials import Credentials, TokenProvider
from blackboard.sync.client.errors import (
    ClientStopped,
    ConnectionClosed,
    ConnectionRefused,
    UpdateTooLarge,
)
from blackboard.sync.client.replica import Replica
from blackboard.sync.client.session import DEFAULT_RECEIVE_BYTES, REMOTE_ORIGIN, Session
from blackboard.sync.client.task_lease import TaskLease
from blackboard.sync.wire.protocol import AwarenessEntry, encode_awareness

log = logging.getLogger(__name__)

DEFAULT_MESSAGE_BYTES = 1024 * 1024  # the server's default BLACKBOARD_MAX_MESSAGE_BYTES
FRAME_BYTES = 16  # message type, sync type and the length of the payload
MERGE_MAX_UPDATES = 1000  # merge_updates is super-linear in the number of updates
INFLIGHT_BYTES = 8 * 1024 * 1024  # sent but not acknowledged, before the sender waits
SNAPSHOT_AFTER_ROWS = 2000  # replica rows before the document is snapshotted
EMPTY_UPDATE = b"\x00\x00"
REFUSED_CLOSES = frozenset({4403, 4404, 1009})
EXPIRED_TOKEN = 4401
HEALTHY_AFTER_S = 3.0  # a connection that lasted this long resets the backoff


class BlackboardClient:
    def __init__(
        self,
        url: str,
        project_id: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        replica: str | Path | None = None,
        name: str | None = None,
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        max_receive_bytes: int = DEFAULT_RECEIVE_BYTES,
        idempotency_ttl_s: float = KEY_RETENTION_S,
        connect_timeout_s: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        """`replica`: a SQLite file for the document and the unacknowledged work (None:
        memory only). `name`: the lease holder (kept in the replica, so a restarted agent
        holds its leases again). `max_message_bytes`: the server's message limit."""
        self.server_url = url.rstrip("/")
        self.project_id = project_id
        self.credentials = Credentials(token, token_provider)
        self.max_message_bytes = max_message_bytes
        self.max_receive_bytes = max_receive_bytes
        self.connect_timeout_s = connect_timeout_s
        self.backoff = backoff or Backoff()
        self.replica = Replica(replica)  # opens the file; start() loads it off the loop
        self._keeps_document = replica is not None
        self.doc = Doc()
        self._pending: deque[tuple[int, bytes]] = deque()  # (row, update), oldest first
        # Every local update up to this row is acknowledged (acks are cumulative, so the
        # pending rows are always the newest local rows).
        self._acked_row = 0
        self.name = name or self.replica.get_meta("name") or f"agent-{uuid.uuid4().hex[:12]}"
        self.replica.set_meta("name", self.name)
        self.calls = CallQueue(
            self.replica,
            project_id,
            self.credentials,
            current_row=self._current_row,
            acked_through=self._acked_through,
            ttl_s=idempotency_ttl_s,
        )
        self.budget = Budget(self.calls)
        self.leases = Leases(self.calls, self.name)
        self.close_codes: deque[int] = deque(maxlen=1000)  # the closes seen, in order
        self._error: BaseException | None = None  # why the client gave up
        self._changed = asyncio.Event()
        self._session: Session | None = None
        self._sent_row = self._acked_row  # per connection: local rows handed to the socket
        self._inflight: deque[tuple[int, int, int]] = deque()  # (message, row, bytes)
        self._pump_wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None  # sends on the current connection
        self._remote: list[bytes] = []  # received, not yet in the replica
        self._acked_mark = 0  # newest ack not yet marked in the replica
        self._persist_wake = asyncio.Event()
        self._presence: dict[str, Any] | None = None
        self._presence_clock = 0
        self._connector: asyncio.Task[None] | None = None
        # The replica writer is never cancelled mid-write (its thread would go on beside
        # the final write in stop()): stop() asks it to finish, then waits for it.
        self._persister: asyncio.Task[None] | None = None
        self._stopping = False
        self._http: httpx.AsyncClient | None = None
        self._subscription = self.doc.observe(self._on_change)

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load the replica, then connect in the background (and reconnect, forever)."""
        await self._load()
        http_url = "http" + self.server_url.removeprefix("ws")  # ws -> http, wss -> https
        self._http = httpx.AsyncClient(base_url=http_url, timeout=30.0)
        self.calls.start(self._http)
        self._stopping = False
        self._connector = asyncio.create_task(self._run(), name="blackboard-connection")
        self._persister = asyncio.create_task(self._persist(), name="blackboard-replica")

    async def _load(self) -> None:
        updates, pending = await asyncio.to_thread(self.replica.load)
        with self.doc.transaction(origin=REMOTE_ORIGIN):  # not new local changes
            for update in updates:
                self.doc.apply_update(update)
        # Edits made before start() are in `pending` too: the observer wrote them.
        self._pending = deque(pending)
        last = await asyncio.to_thread(self.replica.last_row)
        self._acked_row = self._sent_row = pending[0][0] - 1 if pending else last

    async def stop(self, timeout: float = 10.0) -> None:
        """Wait (up to `timeout`) for what is sent to be acknowledged if connected, then
        close. What is not acknowledged stays in the replica for the next start."""
        if self._session is not None and self._session.synced and self._error is None:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                await self.flushed(timeout)
        await self.calls.stop(ClientStopped("the client was stopped"))
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
            self._connector = None
        if self._persister is not None:
            self._stopping = True
            self._persist_wake.set()
            await asyncio.gather(self._persister, return_exceptions=True)
            self._persister = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._write_replica()
        if self._http is not None:
            await self._http.aclose()
        self.doc.unobserve(self._subscription)
        await asyncio.to_thread(self.replica.close)

    async def __aenter__(self) -> BlackboardClient:
        await self.start()
        await self.wait_synced()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- waiting -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.synced

    @property
    def pending_updates(self) -> int:
        """Local updates not yet acknowledged by the server."""
        return len(self._pending)

    async def wait_synced(self, timeout: float | None = 30.0) -> None:
        """Wait until connected with the handshake done (we have the server's state)."""
        await self._until(lambda: self.connected, timeout, "the handshake")

    async def flushed(self, timeout: float | None = 60.0) -> None:
        """Wait until every local change made so far is committed on the server."""
        target = self._current_row()
        await self._until(lambda: self._acked_row >= target, timeout, "durable acks")

    async def _acked_through(self, row: int) -> None:
        await self._until(lambda: self._acked_row >= row, None, "durable acks")

    async def _until(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed  # taken before the check: no wakeup is missed
                    if self._error is not None:
                        raise self._error
                    if done():
                        return
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            log.error("blackboard client for %s gives up: %s", self.project_id, error)
            self._error = error
        self._notify()

    # --- presence and helpers ------------------------------------------------

    def set_presence(self, state: dict[str, Any] | None) -> None:
        """Publish this agent's awareness state (None: gone); re-sent after reconnects."""
        json.dumps(state)  # refuse what is not JSON before keeping it
        self._presence = state
        if self._session is not None and self._session.synced:
            self._send_presence(self._session)

    def _send_presence(self, session: Session) -> None:
        self._presence_clock += 1
        entry = AwarenessEntry(self.doc.client_id, self._presence_clock, json.dumps(self._presence))
        session.send_awareness(encode_awareness([entry]))

    def task_lease(self, task_id: str, ttl_s: float = 300.0) -> TaskLease:
        return TaskLease(self.leases, task_id, ttl_s)

    # --- local changes -------------------------------------------------------

    @property
    def _payload_limit(self) -> int:
        return self.max_message_bytes - FRAME_BYTES

    def _current_row(self) -> int:
        return self._pending[-1][0] if self._pending else self._acked_row

    def _on_change(self, event: TransactionEvent) -> None:
        if event.transaction.origin() != hash(REMOTE_ORIGIN):
            self._record_local(event.update)

    def _record_local(self, update: bytes) -> None:
        # Synchronous on purpose: the edit must not return before its bytes are durable.
        row = self.replica.append_local(update)
        self._pending.append((row, update))
        self._pump_wake.set()
        if len(update) > self._payload_limit:
            error = UpdateTooLarge(len(update), self.max_message_bytes)
            self._fail(error)
            raise error  # pycrdt raises it from the edit (in an ExceptionGroup)

    # --- the connection ------------------------------------------------------

    async def _run(self) -> None:
        while self._error is None:
            code, reason = await self._connection()
            self.close_codes.append(code)
            self._notify()
            if code in REFUSED_CLOSES:
                self._fail(ConnectionRefused(code, reason))
                return
            if code == EXPIRED_TOKEN:
                try:
                    await self.credentials.refresh()
                except Exception:
                    log.exception("token_provider failed; retrying after the backoff")
            await asyncio.sleep(self.backoff.next_delay())

    async def _connection(self) -> tuple[int, str]:
        """One connection, from connecting to its close; the close code and reason."""
        try:
            token = await self.credentials.current()
        except Exception:
            log.exception("token_provider failed; retrying after the backoff")
            return 1006, "no token"
        session = Session(
            self.server_url,
            self.project_id,
            self.doc,
            token=token,
            max_receive_bytes=self.max_receive_bytes,
            listener=self,
        )
        self._session = session
        connected_at: float | None = None
        try:
            await session.connect(self.connect_timeout_s)
        except (OSError, TimeoutError, websockets.WebSocketException, ConnectionClosed) as exc:
            log.info("connecting to %s failed: %r", session.server_url, exc)
            await session.close()
        else:
            connected_at = asyncio.get_running_loop().time()
            if self._presence is not None:
                self._presence_clock += 1  # past the removal the server made on our close
                self._send_presence(session)
            self._notify()
        try:
            closed = await session.wait_closed()
            if connected_at is not None:
                lasted = asyncio.get_running_loop().time() - connected_at
                if lasted >= HEALTHY_AFTER_S:  # not a server that closes us at once, again
                    self.backoff.reset()
            return closed
        finally:
            if self._pump is not None:
                self._pump.cancel()
                await asyncio.gather(self._pump, return_exceptions=True)
                self._pump = None
            await session.close()
            self._session = None

    # SessionListener: called by the session, on the loop, in the order of its frames.

    def on_step1(self, session: Session, state_vector: bytes) -> None:
        """Answer the server's step 1 with the document diff if it fits one message;
        else with an empty step 2, and the pending updates go out in pieces."""
        self._inflight.clear()
        self._sent_row = self._acked_row
        diff = self.doc.get_update(state_vector)
        if len(diff) <= self._payload_limit:
            number = session.send_step2(diff)
            self._sent_row = self._current_row()
        else:
            number = session.send_step2(EMPTY_UPDATE)
        self._inflight.append((number, self._sent_row, 0))
        self._pump_wake.set()
        if self._pump is None:
            self._pump = asyncio.create_task(self._send_pending(session), name="blackboard-sender")

    def on_remote(self, update: bytes) -> None:
        if self._keeps_document:
            self._remote.append(update)
            self._persist_wake.set()

    def on_ack(self, session: Session, count: int) -> None:
        acked = None
        while self._inflight and self._inflight[0][0] <= count:
            acked = self._inflight.popleft()[1]
        if acked is None or acked <= self._acked_row:
            self._notify()
            return
        self._acked_row = acked
        while self._pending and self._pending[0][0] <= acked:
            self._pending.popleft()
        self._acked_mark = acked
        self._persist_wake.set()
        self._notify()

    async def _send_pending(self, session: Session) -> None:
        """Send the pending updates not yet sent on this connection, in pieces."""
        try:
            while session.connected:
                await self._pump_wake.wait()
                self._pump_wake.clear()
                while (batch := self._next_batch()) is not None:
                    update, last_row = batch
                    number = session.send_update(update)
                    self._inflight.append((number, last_row, len(update)))
                    self._sent_row = last_row
                    await session.drain()
                    await self._until(
                        lambda: sum(b for _, _, b in self._inflight) < INFLIGHT_BYTES,
                        None,
                        "acks of what is in flight",
                    )
        except (ConnectionClosed, UpdateTooLarge):
            pass  # the connection loop sees the close (or the failure) and acts

    def _next_batch(self) -> tuple[bytes, int] | None:
        """The next unsent pending updates merged into one update under the limit."""
        rows: list[tuple[int, bytes]] = []
        size = 0
        for row, update in self._pending:
            if row <= self._sent_row:
                continue
            if rows and (
                size + len(update) > self._payload_limit or len(rows) >= MERGE_MAX_UPDATES
            ):
                break
            rows.append((row, update))
            size += len(update)
        while rows:
            merged = rows[0][1] if len(rows) == 1 else merge_updates(*(u for _, u in rows))
            if len(merged) <= self._payload_limit:
                return merged, rows[-1][0]
            if len(rows) == 1:
                self._fail(UpdateTooLarge(len(merged), self.max_message_bytes))
                return None
            rows = rows[: len(rows) // 2]  # a merge can grow: send fewer at once
        return None

    # --- the replica, written off the loop -----------------------------------

    async def _persist(self) -> None:
        while not self._stopping:
            await self._persist_wake.wait()
            self._persist_wake.clear()
            await self._write_replica()

    async def _write_replica(self) -> None:
        remote, self._remote = self._remote, []
        if remote:
            await asyncio.to_thread(self.replica.append_remote, remote)
        if self._acked_mark:
            mark, self._acked_mark = self._acked_mark, 0
            await asyncio.to_thread(self.replica.mark_acked, mark, keep=self._keeps_document)
        if self._keeps_document and self.replica.rows_since_snapshot > SNAPSHOT_AFTER_ROWS:
            upto = await asyncio.to_thread(self.replica.last_row)
            state = self.doc.get_update()  # holds every row up to `upto`, and maybe more
            await asyncio.to_thread(self.replica.write_snapshot, state, upto)
            log.debug("replica snapshot at row %d (%d bytes)", upto, len(state))
