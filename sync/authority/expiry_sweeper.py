"""The server's own clean-up of authoritative state, no client needed: reservations past
their expiry are released (a ledger op by actor "server"), expired task leases are freed,
and idempotency keys past their retention are forgotten. Every change is mirrored into
the document. One instance sweeps at a time: the one holding the `expiry-sweep` fence
(`blackboard.persistence.fence`, decided in the database), which it renews every round; if it dies,
another takes over once the fence expires. Each change is also decided under the
database lock with the database clock, so even a holder that paused past its fence and
wakes mid-round cannot apply an expiry that is no longer due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from blackboard.persistence.fence import Fences, FenceToken
from blackboard.persistence.tasks import cancel_and_wait
from blackboard.sync.authority.leases import LeaseStore
from blackboard.sync.authority.ledger import BudgetLedger
from blackboard.sync.authority.mirror import AuthorityMirror

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 600.0
SWEEP_FENCE = "expiry-sweep"
FENCE_TTL = timedelta(seconds=10)


class ExpirySweeper:
    def __init__(
        self, ledger: BudgetLedger, leases: LeaseStore, mirror: AuthorityMirror, fences: Fences
    ) -> None:
        self._ledger = ledger
        self._leases = leases
        self._mirror = mirror
        self._fences = fences
        self._fence: FenceToken | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expiry-sweeper")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        if self._fence is not None:  # let another instance take over at once
            with contextlib.suppress(Exception):
                await self._fences.release(self._fence)

    async def sweep(self) -> None:
        """One pass: expire what is due now and mirror it."""
        for project_id, reply in await self._ledger.expire_due():
            if reply.effect is not None:
                self._mirror.budget(project_id, reply.effect)
        for lease in await self._leases.expire_due():
            self._mirror.lease(lease)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            try:
                if await self._my_turn():
                    await self.sweep()
                    if loop.time() >= next_prune:
                        next_prune = loop.time() + PRUNE_INTERVAL_S
                        await self._ledger.prune_keys()
            except Exception as exc:  # the database is down: try again next round
                log.warning("expiry sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def _my_turn(self) -> bool:
        """Whether this instance sweeps this round: keep the fence, or take a free one."""
        if self._fence is not None and await self._fences.renew(self._fence, FENCE_TTL):
            return True
        self._fence = await self._fences.acquire(SWEEP_FENCE, FENCE_TTL)
        return self._fence is not None
