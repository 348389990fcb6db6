"""Budget and lease calls: durable idempotency keys and one ordered queue.

A call is written to the replica with its idempotency key before anything is sent, then
sent by one worker, strictly in order, once the local updates made before it are
acknowledged (a claim on a task the agent just created finds the task). Transport
failures, 5xx and 429 are retried with the same key, so a call has exactly one effect
however often it is sent, across crashes of either side. A call older than the server's
key retention is not replayed (the server may have forgotten its key): it fails with
CallExpired. A call whose caller is gone (the agent crashed) is still settled after the
restart; its reply is logged and kept in `recovered`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from blackboard.schemas.document import is_valid_id
from blackboard.sync.authority.idempotency import KEY_RETENTION_S
from blackboard.sync.authority.leases import DEFAULT_TTL_S as DEFAULT_LEASE_TTL_S
from blackboard.sync.client.backoff import Backoff
from blackboard.sync.client.credentials import Credentials
from blackboard.sync.client.errors import CallExpired, CallRefused
from blackboard.sync.client.replica import Replica, StoredCall

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
Outcome = dict[str, Any] | BaseException


class CallQueue:
    def __init__(
        self,
        replica: Replica,
        project_id: str,
        credentials: Credentials,
        *,
        current_row: Callable[[], int],
        acked_through: Callable[[int], Awaitable[None]],
        ttl_s: float = KEY_RETENTION_S,
        backoff: Backoff | None = None,
    ) -> None:
        self._replica = replica
        self._project_id = project_id
        self._credentials = credentials
        self._current_row = current_row
        self._acked_through = acked_through
        self.ttl_s = ttl_s
        self._backoff = backoff or Backoff()
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while the replica holds no call
        self._task: asyncio.Task[None] | None = None
        self.recovered: list[tuple[StoredCall, Outcome]] = []  # calls of an earlier process

    def start(self, http: httpx.AsyncClient) -> None:
        self._task = asyncio.create_task(self._run(http), name="blackboard-calls")

    async def stop(self, error: BaseException) -> None:
        """Stop sending; waiting callers get `error` (their calls stay in the replica)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_waiters(error)

    async def submit(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Persist the call with a new key, queue it, and wait for its reply."""
        body = {**body, "idempotency_key": f"bbc-{uuid.uuid4().hex}"}
        text = json.dumps(body, separators=(",", ":"))
        call_id = await asyncio.to_thread(
            self._replica.add_call, path, text, time.time(), self._current_row()
        )
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = future
        self._idle.clear()
        self._wake.set()
        return await future

    async def settled(self, timeout: float | None = 60.0) -> None:
        """Wait until every queued call (this process's and a crashed one's) is settled."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    def _fail_waiters(self, error: BaseException) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()

    async def _run(self, http: httpx.AsyncClient) -> None:
        try:
            while True:
                self._wake.clear()
                calls = await asyncio.to_thread(self._replica.calls)
                if not calls:
                    if not self._wake.is_set():  # no call was submitted while we read
                        self._idle.set()
                    await self._wake.wait()
                for call in calls:
                    await self._settle(http, call)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the document can never sync (a refused socket)
            self._fail_waiters(exc)
            raise

    async def _settle(self, http: httpx.AsyncClient, call: StoredCall) -> None:
        outcome: Outcome
        if self._expired(call):
            outcome = self._expiry(call)
        else:
            await self._acked_through(call.after_row)
            outcome = await self._send(http, call)
        await asyncio.to_thread(self._replica.remove_call, call.call_id)
        future = self._waiters.pop(call.call_id, None)
        if future is None:
            log.info("a call queued before a restart was settled: %s -> %r", call.body, outcome)
            self.recovered.append((call, outcome))
        elif not future.done():
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _expired(self, call: StoredCall) -> bool:
        return time.time() - call.created_at > self.ttl_s

    def _expiry(self, call: StoredCall) -> CallExpired:
        return CallExpired(
            f"the call {call.body} was queued {time.time() - call.created_at:.0f} s ago, longer"
            f" than the server keeps idempotency keys ({self.ttl_s:.0f} s): not replayed"
        )

    async def _send(self, http: httpx.AsyncClient, call: StoredCall) -> Outcome:
        url = f"/api/projects/{self._project_id}/{call.path}"
        while True:
            if self._expired(call):
                return self._expiry(call)
            try:
                await self._credentials.current()
                response = await http.post(
                    url,
                    content=call.body,
                    headers={"Content-Type": "application/json", **self._credentials.headers()},
                )
            except httpx.TransportError as exc:
                log.debug("call %s: %s; retrying", call.call_id, exc)
            else:
                if response.status_code < 300:
                    self._backoff.reset()
                    return _json(response)
                if response.status_code == 401 and self._credentials.provider is not None:
                    await self._credentials.refresh()
                elif response.status_code not in RETRY_STATUSES:
                    self._backoff.reset()
                    return CallRefused(response.status_code, _json(response))
            await asyncio.sleep(self._backoff.next_delay())


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": "http_error", "detail": response.text[:500]}
    return body if isinstance(body, dict) else {"error": "http_error", "detail": str(body)}


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


Amount = int | float


class Budget:
    """`client.budget`: each call returns the server's reply, or raises CallRefused."""

    def __init__(self, calls: CallQueue) -> None:
        self._calls = calls

    async def reserve(
        self, amount: Amount, ttl_s: float | None = None, ref: str | None = None
    ) -> dict[str, Any]:
        return await self._op({"op": "reserve", "amount": amount, "ttl_s": ttl_s, "ref": ref})

    async def commit(
        self, reservation_id: str, amount: Amount | None = None, ref: str | None = None
    ) -> dict[str, Any]:
        body = {"op": "commit", "reservation_id": reservation_id, "amount": amount, "ref": ref}
        return await self._op(body)

    async def release(self, reservation_id: str, ref: str | None = None) -> dict[str, Any]:
        return await self._op({"op": "release", "reservation_id": reservation_id, "ref": ref})

    async def charge(self, amount: Amount, ref: str | None = None) -> dict[str, Any]:
        return await self._op({"op": "charge", "amount": amount, "ref": ref})

    async def _op(self, body: dict[str, Any]) -> dict[str, Any]:
        amount = body.get("amount")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
            raise TypeError(f"amount must be a number, got {amount!r}")
        return await self._calls.submit("budget/ops", _without_none(body))


class Leases:
    """`client.leases`: claim, renew, release a task's lease as `holder`."""

    def __init__(self, calls: CallQueue, holder: str) -> None:
        self._calls = calls
        self.holder = holder

    async def claim(self, task_id: str, ttl_s: float = DEFAULT_LEASE_TTL_S) -> dict[str, Any]:
        return await self._lease(task_id, {"action": "claim", "ttl_s": ttl_s})

    async def renew(
        self, task_id: str, fencing_token: int, ttl_s: float = DEFAULT_LEASE_TTL_S
    ) -> dict[str, Any]:
        body = {"action": "renew", "ttl_s": ttl_s, "fencing_token": fencing_token}
        return await self._lease(task_id, body)

    async def release(self, task_id: str, fencing_token: int) -> dict[str, Any]:
        return await self._lease(task_id, {"action": "release", "fencing_token": fencing_token})

    async def _lease(self, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if not is_valid_id(task_id):
            raise ValueError(f"{task_id!r} is not a valid task id")
        return await self._calls.submit(f"tasks/{task_id}/lease", {**body, "holder": self.holder})
