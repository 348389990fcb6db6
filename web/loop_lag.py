"""How late the serving event loop runs what is due, on /metrics.

Every room shares one loop: whatever holds it (a big document's load, a blocking call)
delays every room's deliveries by as long. A task sleeps `INTERVAL_S` again and again
and records how late it woke (`blackboard_event_loop_lag_seconds`), so a stall shows
as the server's own figure, apart from the clients' and the machine's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from blackboard.persistence.tasks import cancel_and_wait

# 100 wake-ups a second (a few µs each): any stall longer than this is seen.
INTERVAL_S = 0.01


class LoopLagSampler:
    def __init__(self, observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
        self._observe = observe
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop lag")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            self._observe(max(0.0, loop.time() - due))
