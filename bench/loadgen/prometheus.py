"""Reading a Blackboard server's /metrics: each sample's value by its line's name."""

from __future__ import annotations

import httpx


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    """Every unlabelled sample (`name value`), and labelled ones under `name{labels}`."""
    response = await http.get("/metrics")
    response.raise_for_status()
    pairs = (line.rsplit(" ", 1) for line in response.text.splitlines() if line[:1] != "#")
    return {name: float(value) for name, value in pairs}


LOOP_LAG = "blackboard_event_loop_lag_seconds"


def loop_lag(before: dict[str, float], after: dict[str, float]) -> tuple[int, float | None]:
    """Between two scrapes: how many loop-lag samples were over 20 ms late, and the bound
    of the smallest bucket that holds them all (the worst lag is at most that, in ms)."""
    taken = after[f"{LOOP_LAG}_count"] - before[f"{LOOP_LAG}_count"]
    buckets: dict[float, float] = {}
    for name, value in after.items():
        if name.startswith(f'{LOOP_LAG}_bucket{{le="'):
            bound = float(name.split('"')[1])
            buckets[bound] = value - before.get(name, 0.0)
    stalls = int(taken - buckets[0.02])
    held = [bound for bound, count in sorted(buckets.items()) if count == taken]
    worst = held[0] * 1e3 if held and taken else None
    return stalls, worst
