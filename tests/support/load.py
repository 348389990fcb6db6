"""Load in its own process (so it does not share the test's event loop or core): writers
that send document updates to one project for a while, as fast as the server takes them
or at a fixed rate, and print one JSON line per writer: updates sent, bytes sent, and the
close code if the server closed them.

    python -m tests.support.load ws://127.0.0.1:8000/sync/film?token=... \\
        --writers 2 --seconds 4 --size 4096 [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import websockets
from pycrdt import Doc, Map

from blackboard.sync.wire.protocol import sync_update

KEYS_PER_WRITER = 20  # overwritten in turn, so the document stays small


async def _discard(ws: websockets.ClientConnection) -> None:
    """Read what the server fans out, so this writer is never a slow consumer."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def writer(url: str, seconds: float, size: int, rate: float) -> dict:
    doc = Doc()
    pending: list[bytes] = []
    subscription = doc.observe(lambda event: pending.append(event.update))
    shots = doc.get("shots", type=Map)
    sent = sent_bytes = 0
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        reader = asyncio.create_task(_discard(ws))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(websockets.ConnectionClosed):
            while (now := loop.time()) - started < seconds:
                if rate and sent >= (now - started) * rate:
                    await asyncio.sleep(1 / rate)  # the pace of the load
                    continue
                # Keys of this Doc's own: a key an earlier writer set is a concurrent
                # write that may lose to it (yrs then sends the content as deleted).
                key = f"w{doc.client_id}-{sent % KEYS_PER_WRITER}"
                shots[key] = Map({"notes": "x" * size})
                update = sync_update(pending.pop())
                await ws.send(update)
                sent, sent_bytes = sent + 1, sent_bytes + len(update)
        await ws.close()  # while still reading, so the server's close reply gets through
        await reader
        received = ws.protocol.close_rcvd
    doc.unobserve(subscription)
    return {"sent": sent, "bytes": sent_bytes, "close_code": received.code if received else None}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=0.0, help="per writer; 0: full speed")
    args = parser.parse_args()
    results = await asyncio.gather(
        *(writer(args.url, args.seconds, args.size, args.rate) for _ in range(args.writers))
    )
    for result in results:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
