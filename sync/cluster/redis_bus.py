"""Redis as a message bus between server instances: publish, subscribe, a few commands.

Redis is the fast path, never the only copy of anything, so this module favours staying
out of the way over delivering at all costs:

- `publish` never blocks and never raises: messages queue in a bounded outbox that one
  task drains (several queued messages go out in one pipelined round trip, still one
  PUBLISH each). While Redis is down, past the bound, or when a send fails, messages are
  dropped and counted; receivers notice the gap and read the log.
- One subscriber connection, rebuilt from scratch after any error (redis-py's own retries
  are off, so a reconnect is never silent): `on_connected` fires once every channel is
  subscribed again, which is when callers catch up on what they missed. `healthy` means
  exactly this: subscribed and listening.
- Every call has a timeout, and an idle subscriber pings, so a dead connection is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

FAILURES = (RedisError, OSError, TimeoutError)
MAX_PUBLISH_BATCH = 512
RECONNECT_MIN_S = 0.05
T = TypeVar("T")
RECONNECT_MAX_S = 2.0


class RedisUnavailable(Exception):
    """Redis did not answer in time, or the connection failed."""


class RedisBus:
    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout_s: float = 2.0,
        ping_interval_s: float = 5.0,
        max_outbox: int = 10_000,
    ) -> None:
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.ping_interval_s = ping_interval_s
        self.max_outbox = max_outbox
        self.healthy = False
        self.state = "connecting"
        self.published = 0
        self.dropped = 0
        self.received = 0
        # Called on the event loop; must not raise (errors are logged and ignored).
        self.on_message: Callable[[bytes, bytes], None] = lambda channel, data: None
        self.on_subscribed: Callable[[bytes], None] = lambda channel: None
        self.on_connected: Callable[[], None] = lambda: None
        self.on_disconnected: Callable[[], None] = lambda: None
        # redis-py's own retries are off: a reconnect of the subscriber must never go
        # unnoticed, and commands retry once by hand (see `_once_more`).
        self._client = self._connect(url)
        self._subscriber = self._connect(url)
        self._control = self.channel("bus")  # always subscribed: the connection's heartbeat
        self._channels: set[bytes] = {self._control}
        self._pubsub: PubSub | None = None
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._subscriber_task: asyncio.Task[None] | None = None
        self._publisher_task: asyncio.Task[None] | None = None
        self._publish_failing = False
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._backoff = RECONNECT_MIN_S

    def _connect(self, url: str) -> redis.Redis:
        return redis.Redis.from_url(
            url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def channel(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    def key(self, name: str) -> str:
        return self.prefix + name

    async def start(self) -> None:
        """Start connecting in the background; a missing Redis is not an error."""
        self._subscriber_task = asyncio.create_task(self._subscribe_loop(), name="redis-sub")
        self._publisher_task = asyncio.create_task(self._publish_loop(), name="redis-pub")

    async def stop(self) -> None:
        """Send what is queued (within the timeout), then close."""
        tasks = [self._subscriber_task, self._publisher_task, *self._side_tasks]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._outbox and self.healthy:  # e.g. the last awareness removals
            batch, self._outbox = list(self._outbox), deque()
            with contextlib.suppress(*FAILURES):
                await asyncio.wait_for(_once_more(self._send, batch), self.timeout_s)
        await self._close_pubsub()
        for client in (self._client, self._subscriber):
            with contextlib.suppress(*FAILURES):
                await asyncio.wait_for(client.aclose(), self.timeout_s)

    # --- publishing ----------------------------------------------------------

    def publish(self, channel: bytes, data: bytes) -> None:
        """Queue one message; dropped (and counted) while Redis is down or the queue full."""
        if not self.healthy or len(self._outbox) >= self.max_outbox:
            self.dropped += 1
            return
        self._outbox.append((channel, data))
        self._wakeup.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                count = min(len(self._outbox), MAX_PUBLISH_BATCH)
                batch = [self._outbox.popleft() for _ in range(count)]
                try:
                    async with asyncio.timeout(self.timeout_s):  # no extra task per send
                        await _once_more(self._send, batch)
                    self.published += count
                    self._publish_failing = False
                except FAILURES as exc:
                    # Lost for the fast path only: receivers see the counter jump and
                    # read the log. If Redis itself is gone, the subscriber notices.
                    self.dropped += count + len(self._outbox)
                    self._outbox.clear()
                    if not self._publish_failing:
                        log.warning("redis: publish failed: %s", exc or type(exc).__name__)
                    self._publish_failing = True

    async def _send(self, batch: list[tuple[bytes, bytes]]) -> None:
        if len(batch) == 1:
            await self._client.publish(*batch[0])
            return
        pipe = self._client.pipeline(transaction=False)
        for channel, data in batch:
            pipe.publish(channel, data)
        await pipe.execute()

    # --- subscribing ---------------------------------------------------------

    def subscribe(self, channel: bytes) -> None:
        """Listen on `channel` from now on (again after every reconnect)."""
        if channel in self._channels:
            return
        self._channels.add(channel)
        if self.healthy and self._pubsub is not None:
            self._side_task(self._pubsub.subscribe(channel))

    def unsubscribe(self, channel: bytes) -> None:
        if channel not in self._channels or channel == self._control:
            return
        self._channels.discard(channel)
        if self.healthy and self._pubsub is not None:
            self._side_task(self._pubsub.unsubscribe(channel))

    def _side_task(self, work: Any) -> None:
        async def run() -> None:
            try:
                await asyncio.wait_for(work, self.timeout_s)
            except FAILURES as exc:  # the subscription set is unknown now: start over
                self._resubscribe(f"subscription change failed: {exc or type(exc).__name__}")

        task = asyncio.create_task(run())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _resubscribe(self, reason: str) -> None:
        self._mark_down(reason)
        if self._subscriber_task is not None:
            self._subscriber_task.cancel()
        self._subscriber_task = asyncio.create_task(self._subscribe_loop(), name="redis-sub")

    async def _subscribe_loop(self) -> None:
        await self._close_pubsub()  # a cancelled predecessor's
        while True:
            try:
                await self._listen()
            except FAILURES as exc:
                self._mark_down(str(exc) or type(exc).__name__)
            await self._close_pubsub()
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RECONNECT_MAX_S)

    async def _listen(self) -> None:
        pubsub = self._subscriber.pubsub()
        self._pubsub = pubsub
        wanted = set(self._channels)
        await asyncio.wait_for(pubsub.subscribe(*wanted), self.timeout_s)
        # Up only once Redis confirmed every subscription: from then on nothing
        # published is missed, so what callers read from the log after
        # `on_connected` plus what arrives here is complete.
        deadline = time.monotonic() + self.timeout_s
        while wanted:
            if time.monotonic() > deadline:
                raise TimeoutError("subscription not confirmed")
            message = await pubsub.get_message(timeout=self.timeout_s)
            if message is not None and message["type"] == "subscribe":
                wanted.discard(message["channel"])
        for channel in self._channels - set(pubsub.channels):
            await asyncio.wait_for(pubsub.subscribe(channel), self.timeout_s)
        # Pooled command connections may predate a Redis restart: drop them, so the
        # next publish opens a live one instead of failing on a dead one.
        await asyncio.wait_for(self._client.connection_pool.disconnect(), self.timeout_s)
        self.healthy, self.state = True, "ok"
        self._backoff = RECONNECT_MIN_S
        log.info("redis: subscribed to %d channels", len(self._channels))
        self._call(self.on_connected)
        last_traffic = time.monotonic()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.ping_interval_s)
            if message is None:
                if pinged and time.monotonic() - last_traffic > self.ping_interval_s:
                    raise TimeoutError("no answer to ping")
                await asyncio.wait_for(pubsub.ping(), self.timeout_s)
                pinged = True
                continue
            last_traffic, pinged = time.monotonic(), False
            kind = message["type"]
            if kind == "message":
                self.received += 1
                self._call(self.on_message, message["channel"], message["data"])
            elif kind == "subscribe":
                self._call(self.on_subscribed, message["channel"])

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("redis bus: callback failed")

    def _mark_down(self, reason: str) -> None:
        was_healthy = self.healthy
        self.healthy, self.state = False, f"down: {reason}"
        if was_healthy:
            log.warning("redis: %s; falling back to polling the log", reason)
            self._call(self.on_disconnected)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await asyncio.wait_for(pubsub.aclose(), self.timeout_s)

    # --- plain commands ------------------------------------------------------

    async def command(self, *args: Any) -> Any:
        """Run one command; RedisUnavailable if it fails or takes too long."""
        try:
            return await asyncio.wait_for(
                _once_more(self._client.execute_command, *args), self.timeout_s
            )
        except FAILURES as exc:
            raise RedisUnavailable(str(exc) or type(exc).__name__) from exc

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run several commands in one round trip (not a transaction)."""

        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for args in commands:
                pipe.execute_command(*args)
            return await pipe.execute()

        try:
            return await asyncio.wait_for(_once_more(run), self.timeout_s)
        except FAILURES as exc:
            raise RedisUnavailable(str(exc) or type(exc).__name__) from exc


async def _once_more(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `call`, and once more if its pooled connection turned out to be dead (Redis
    restarted since it was last used): the failed connection is dropped, the retry
    opens a new one. A duplicate PUBLISH is harmless (updates are idempotent)."""
    try:
        return await call(*args)
    except RedisConnectionError:
        return await call(*args)
