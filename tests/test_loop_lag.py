"""The loop-lag sampler sees a stall of the event loop as the lateness of its wake-up."""

from __future__ import annotations

import asyncio
import time

from blackboard.web.loop_lag import LoopLagSampler


async def test_a_stall_of_the_loop_is_recorded_as_its_lag() -> None:
    lags: list[float] = []
    sampler = LoopLagSampler(lags.append, interval_s=0.005)
    sampler.start()
    await asyncio.sleep(0.1)
    time.sleep(0.1)  # noqa: ASYNC251 - holds the loop, as a blocking call would
    await asyncio.sleep(0.1)
    await sampler.stop()
    assert max(lags) >= 0.09
    assert sorted(lags)[len(lags) // 2] < 0.05  # the wake-ups around it were on time
    count = len(lags)
    await asyncio.sleep(0.05)
    assert len(lags) == count  # stopped
