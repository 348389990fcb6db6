"""Delivery latency through a server: a probe writer adds a fresh marker key to `spec`
every few milliseconds, a probe reader notes when each marker arrives. Only bytes are
searched on the reader side, so the probe costs little next to the load it measures."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics

import websockets
from pycrdt import Doc, Map

from blackboard.sync.wire.protocol import sync_update
from tests.support.api import eventually


async def probe_latency(
    writer_url: str, reader_url: str, seconds: float, interval_s: float = 0.01
) -> list[float]:
    """Seconds from send to arrival, one per probe that arrived."""
    doc = Doc()
    pending: list[bytes] = []
    subscription = doc.observe(lambda event: pending.append(event.update))
    spec = doc.get("spec", type=Map)
    # Keys no earlier probe used: reusing one would be a concurrent write that may lose,
    # and yrs would then send the marker as deleted content.
    prefix = f"probe-{doc.client_id}-"
    marker = re.compile(re.escape(prefix.encode()) + rb"(\d{6})")
    loop = asyncio.get_running_loop()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    joined = asyncio.Event()

    async def read(ws: websockets.ClientConnection, note: bool) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in ws:
                joined.set()
                if note and isinstance(frame, bytes) and (found := marker.search(frame)):
                    sent = sent_at.pop(int(found.group(1)), None)
                    if sent is not None:
                        latencies.append(loop.time() - sent)

    options: dict = {"compression": None, "max_size": None}
    async with (
        websockets.connect(writer_url, **options) as writer,
        websockets.connect(reader_url, **options) as reader,
    ):
        tasks = [asyncio.create_task(read(writer, False)), asyncio.create_task(read(reader, True))]
        await asyncio.wait_for(joined.wait(), 10)
        for n in range(int(seconds / interval_s)):
            spec[f"{prefix}{n:06d}"] = True
            sent_at[n] = loop.time()
            await writer.send(sync_update(pending.pop()))
            await asyncio.sleep(interval_s)  # the pace of the probes
        # The last probes' way through: up to 1 s (a probe lost under load is not counted).
        with contextlib.suppress(AssertionError):
            await eventually(lambda: _all_arrived(sent_at), timeout=1.0)
        for ws in (writer, reader):
            if (closed := ws.protocol.close_rcvd) is not None:
                raise AssertionError(f"the server closed a probe: {closed.code} {closed.reason}")
        # Close while still reading, so the server's close replies get through.
        await asyncio.gather(writer.close(), reader.close())
        await asyncio.gather(*tasks)
    doc.unobserve(subscription)
    return latencies


def _all_arrived(sent_at: dict[int, float]) -> None:
    assert not sent_at, f"{len(sent_at)} probes on their way"


def median_ms(latencies: list[float]) -> float:
    return statistics.median(latencies) * 1000
