"""One client connection: who it is, and a bounded outbox drained by its own task.

A send never raises into the room: it only queues. If the outbox holds more than
`max_queue_bytes`, the client is too slow and is closed with 1013, so one slow or dead
socket costs the others nothing. A `DirectChannel` takes a frame at once when nothing
is queued or being sent before it and its transport has room; the outbox and its task
then only hold a backlog.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

from blackboard.sync.room.acks import AckTracker
from blackboard.sync.room.channel import Channel, DirectChannel
from blackboard.sync.wire import close_codes
from blackboard.sync.wire.protocol import ack_message

log = logging.getLogger(__name__)
_ids = itertools.count(1)
# A slow consumer's close frame waits behind what its socket already buffers; give it
# as long as uvicorn gives a closing handshake.
CLOSE_TIMEOUT_S = 10.0


class Connection:
    # A broadcast reads a few fields of every recipient: slots keep them in the object.
    __slots__ = (
        "__weakref__",  # repair limits count per connection (`sync.rules.repair_limit`)
        "_closer",
        "_drain_then_close",
        "_offer",
        "_outbox",
        "_queued_bytes",
        "_ready",
        "_sender",
        "_sending",
        "acks",
        "actor",
        "awareness_ids",
        "can_write",
        "channel",
        "close_code",
        "closed",
        "closing",
        "id",
        "max_queue_bytes",
        "project_id",
        "wants_acks",
    )

    def __init__(
        self,
        channel: Channel,
        *,
        project_id: str,
        actor: str,
        can_write: bool,
        wants_acks: bool,
        max_queue_bytes: int,
    ) -> None:
        self.id = next(_ids)
        self.channel = channel
        # Taken once: a broadcast calls it for every recipient.
        self._offer = channel.offer if isinstance(channel, DirectChannel) else None
        self.project_id = project_id
        self.actor = actor
        self.can_write = can_write
        self.wants_acks = wants_acks
        self.max_queue_bytes = max_queue_bytes
        self.awareness_ids: set[int] = set()  # awareness client ids this connection set
        self.close_code: int | None = None
        self.closing = asyncio.Event()  # a close is decided (the socket may still be open)
        self.closed = asyncio.Event()
        self._outbox: deque[bytes] = deque()
        self._queued_bytes = 0
        self._sending = False  # the task has taken a frame that the channel has not
        self._ready = asyncio.Event()
        self._drain_then_close: tuple[int, str] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.acks = AckTracker(lambda count: self.send(ack_message(count)))
        self._sender = asyncio.create_task(self._send_loop(), name=f"conn-{self.id}-send")

    @property
    def open(self) -> bool:
        return self.close_code is None

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def log_ids(self) -> dict[str, object]:
        """Log fields that tie an event to this project and connection (JSON logs)."""
        return {"project_id": self.project_id, "connection_id": self.id}

    def send(self, message: bytes) -> None:
        """Queue one frame; close the connection if its outbox is already over the cap.

        The cap bounds the backlog, not one message: a sync step 2 of a document bigger
        than the cap (documents may reach `max_document_bytes`) still goes to a client
        that keeps up, so an outbox holds at most the cap plus one message.
        """
        if self.close_code is not None or self._drain_then_close:  # closed or closing
            return
        if self._queued_bytes > self.max_queue_bytes:
            self.close(close_codes.TRY_AGAIN_LATER, "slow consumer: send queue full")
            return
        offer = self._offer
        if offer is not None and not self._outbox and not self._sending:
            try:
                if offer(message):
                    return
            except Exception as exc:  # the peer is gone
                self._send_failed(exc)
                return
        self._outbox.append(message)
        self._queued_bytes += len(message)
        self._ready.set()

    def close(self, code: int, reason: str, *, drain: bool = False) -> None:
        """Close with `code`; with `drain`, after what is queued has been sent."""
        if not self.open:
            return
        self.closing.set()
        if drain:
            if self._drain_then_close is None:  # the first decided close wins
                self._drain_then_close = (code, reason)
            self._ready.set()
            return
        self.close_code = code
        self._outbox.clear()
        self._queued_bytes = 0
        self._sender.cancel()
        self._closer = asyncio.create_task(self._close_channel(code, reason))

    async def _close_channel(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.channel.close(code, reason), CLOSE_TIMEOUT_S)
        except (TimeoutError, Exception) as exc:
            log.debug("connection %s: close failed: %s", self.id, exc, extra=self.log_ids)
        finally:
            self.closed.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._ready.wait()
                while self._outbox:
                    message = self._outbox.popleft()
                    self._queued_bytes -= len(message)
                    self._sending = True
                    await self.channel.send(message)
                    self._sending = False
                self._ready.clear()
                if self._drain_then_close:
                    code, reason = self._drain_then_close
                    self._drain_then_close = None
                    self.close(code, reason)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._send_failed(exc)

    def _send_failed(self, exc: Exception) -> None:
        """The peer is gone: mark closed, never raise into a room."""
        log.debug("connection %s: send failed: %s", self.id, exc, extra=self.log_ids)
        self.close(close_codes.GOING_AWAY, "send failed")
