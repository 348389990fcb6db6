"""What the agent client's durable local edits cost: the replica write inside the edit.

Every local transaction is written to the replica (SQLite, WAL, synchronous=FULL) before
the edit returns, on the event loop (README, "Writing an agent"). This measures an edit
through `BlackboardClient` (edit to return: pycrdt, the observer, the write and its
fsync), for small and large transactions, on the disk the replica is on.

    python -m bench.agent_replica [--dir PATH] [--edits N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from pycrdt import Map

from bench.machine import describe
from blackboard.sync.client import BlackboardClient

SIZES = (100, 10_000, 100_000)  # bytes of text per edit


async def measure(folder: str, edits: int) -> list[tuple[int, float, float]]:
    rows = []
    for size in SIZES:
        path = os.path.join(folder, f"replica-{size}.db")
        # Never started: the edits stay pending, as for an agent offline.
        client = BlackboardClient("ws://127.0.0.1:9", "bench", replica=path)
        shots = client.doc.get("shots", type=Map)
        text = "x" * size
        timings = []
        for i in range(edits):
            start = time.perf_counter()
            shots[f"S{i}"] = Map({"notes": text})
            timings.append(time.perf_counter() - start)
        await client.stop()
        timings.sort()
        rows.append(
            (size, statistics.median(timings) * 1e3, timings[int(0.99 * len(timings))] * 1e3)
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="the cost of a durable local edit")
    parser.add_argument("--dir", help="where the replica files go (default: a temp folder)")
    parser.add_argument("--edits", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        rows = asyncio.run(measure(folder, args.edits))
    print(
        f"{describe()}; {args.edits} edits per size, replica in {args.dir or tempfile.gettempdir()}"
    )
    print("| text per edit | p50 ms | p99 ms |")
    print("|---:|---:|---:|")
    for size, p50, p99 in rows:
        print(f"| {size:,} B | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
