"""How long saving or reading one big snapshot holds the event loop, on each backend.

    python -m bench.snapshot_stall                # 20 MB, 5 rounds, SQLite and Postgres
    python -m bench.snapshot_stall --mb 5 --rounds 3

Compaction saves a snapshot, and a cold load reads the newest one, on the serving loop
(`persistence.snapshot_rows`): every other room waits while a step of that work runs.
The server's loop-lag sampler, waking every 1 ms, records how late the loop ran it at
worst during each save and each read (on uvloop, whose clock counts whole ms, with
glibc's mmap threshold as `blackboard serve` sets it). The state is random bytes (the
store never applies it). Postgres is a fresh database next to
BLACKBOARD_TEST_DATABASE_URL, dropped afterwards; SQLite a file in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import uvloop

from blackboard.persistence.clock import utc_now
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.factory import make_store
from blackboard.persistence.records import Snapshot
from blackboard.sync.projects.creation import initial_update
from blackboard.web.loop_lag import LoopLagSampler
from blackboard.web.malloc_tuning import return_large_blocks
from tests.support.backends import create_database, drop_database

TICK_S = 0.001


async def _worst_lag_ms(work: Awaitable[object]) -> tuple[float, float]:
    """(`work`'s duration, the loop's worst lag while it ran), in ms: the server's own
    sampler (`blackboard.web.loop_lag`), waking every `TICK_S`."""
    worst = 0.0

    def observe(lag: float) -> None:
        nonlocal worst
        worst = max(worst, lag)

    sampler = LoopLagSampler(observe, TICK_S)
    sampler.start()
    await asyncio.sleep(TICK_S * 2)  # the sampler runs before the work starts
    started = time.perf_counter()
    try:
        await work
    finally:
        elapsed = time.perf_counter() - started
        await sampler.stop()
    return elapsed * 1e3, worst * 1e3


async def _measure(store: DocumentStore, size: int, rounds: int) -> list[tuple[float, ...]]:
    await store.open(migrate_schema=True)
    await store.create_project("stall", "stall", initial_update("stall", 0, "USD", {}), "bench")
    results = []
    for n in range(1, rounds + 1):
        snapshot = Snapshot(n, os.urandom(size), b"", utc_now())
        save = await _worst_lag_ms(store.save_snapshot("stall", snapshot))
        read = await _worst_lag_ms(store.load("stall"))
        results.append((*save, *read))
    return results


async def run(size: int, rounds: int) -> None:
    print(f"{size / 1e6:g} MB state, {rounds} rounds; ms: duration / worst loop lag\n")
    print("| backend | save (each round) | read (each round) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as folder:
        for backend in ("sqlite", "postgres"):
            url = await create_database(migrated=False) if backend == "postgres" else None
            store = make_store(url, Path(folder))
            try:
                rows = await _measure(store, size, rounds)
            finally:
                await store.close()
                if url is not None:
                    await drop_database(url)
            save = ", ".join(f"{r[0]:.0f} / {r[1]:.1f}" for r in rows)
            read = ", ".join(f"{r[2]:.0f} / {r[3]:.1f}" for r in rows)
            print(f"| {backend} | {save} | {read} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot_stall", description=__doc__)
    parser.add_argument("--mb", type=float, default=20.0, help="snapshot state size")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    return_large_blocks()  # as `blackboard serve` does: big blocks are mapped afresh
    uvloop.run(run(int(args.mb * 1e6), args.rounds))


if __name__ == "__main__":
    main()
