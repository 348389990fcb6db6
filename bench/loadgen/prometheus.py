"""Reading a Blackboard server's /metrics: each sample's value by its line's name."""

from __future__ import annotations

import httpx


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    """Every unlabelled sample (`name value`), and labelled ones under `name{labels}`."""
    response = await http.get("/metrics")
    response.raise_for_status()
    pairs = (line.rsplit(" ", 1) for line in response.text.splitlines() if line[:1] != "#")
    return {name: float(value) for name, value in pairs}
