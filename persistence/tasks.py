"""Stopping background tasks: cancel, then wait (bounded) until they have really ended.

A task cancelled but not awaited may still be running its clean-up when the next part
shuts down (e.g. a query on a pool being closed), and its failure goes unreported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# A cancelled task stops at its next await; this only bounds a task that swallows it.
STOP_WAIT_S = 5.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], timeout_s: float = STOP_WAIT_S
) -> None:
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, _ = await asyncio.wait(pending, timeout=timeout_s)
    for task in done:  # retrieved, so a failure is not reported again as "never retrieved"
        if not task.cancelled():
            task.exception()
