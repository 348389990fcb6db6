"""`async with client.task_lease(task_id, ttl_s) as lease:` hold a task while working.

Claims on enter, renews at a third of the ttl (two renewals may fail or be late before
the lease runs out), releases on exit. If a renewal is refused (the lease expired, say
the agent was paused, and another holder may have claimed it with a larger fencing
token), the lease is lost: `lease.lost` is set, `lease.check()` raises, and leaving the
block raises LeaseLost.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

from blackboard.sync.client.calls import Leases
from blackboard.sync.client.errors import CallRefused, LeaseLost


class TaskLease:
    def __init__(self, leases: Leases, task_id: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be above 0")
        self._leases = leases
        self.task_id = task_id
        self.ttl_s = ttl_s
        self.fencing_token = 0
        self.expires_at: str | None = None
        self.renewals = 0
        self.lost: LeaseLost | None = None
        self._renewer: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Raise LeaseLost if the lease is gone (call before acting on the task)."""
        if self.lost is not None:
            raise self.lost

    async def __aenter__(self) -> TaskLease:
        self._granted(await self._leases.claim(self.task_id, self.ttl_s))
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self.task_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._renewer is not None
        self._renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewer
        if self.lost is None:
            try:
                await self._leases.release(self.task_id, self.fencing_token)
            except CallRefused as refused:
                self.lost = LeaseLost(f"task {self.task_id!r}: release refused: {refused}")
        if self.lost is not None and exc is None:
            raise self.lost

    def _granted(self, reply: dict[str, Any]) -> None:
        self.fencing_token = int(reply["fencing_token"])
        self.expires_at = reply.get("expires_at")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                reply = await self._leases.renew(self.task_id, self.fencing_token, self.ttl_s)
            except Exception as exc:  # refused (stale_token), or the client stopped
                self.lost = LeaseLost(
                    f"task {self.task_id!r}: lease with fencing token {self.fencing_token}"
                    f" lost: {exc}"
                )
                return
            self._granted(reply)
            self.renewals += 1
