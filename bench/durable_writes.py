"""Durable-write benchmark: the group-commit path (UpdateLog -> DocumentStore) on Postgres,
or with `--sqlite` on the embedded default.

1,000 projects, 40-byte updates offered at a fixed aggregate rate (5k, 10k, 20k per
second by default) from one process. For each update it measures the durable-ack
latency: from `UpdateLog.append` to its future resolving after COMMIT, which is what a
socket `?ack=1` ack or an HTTP 200 waits for. Reports p50/p99/max and committed rows/s.

    python -m bench.durable_writes            # 10 s per rate
    python -m bench.durable_writes --quick    # 3 s per rate, for a smoke run

The database is a fresh one created next to BLACKBOARD_TEST_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test) and dropped afterwards. With `--private`, it
lives in a private cluster started for the run (initdb in a temporary folder), so other
work on the shared cluster (CREATE/DROP DATABASE of test suites, which write WAL and
force checkpoints) does not stall its commits. With `--sqlite`, the database is a fresh
SQLite file in a temporary folder, as `blackboard serve` keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import asyncpg

from bench.machine import describe
from bench.procstat import cpu_seconds
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.factory import make_store
from blackboard.persistence.update_log import UpdateLog
from blackboard.sync.projects.creation import initial_update
from blackboard.web.gc_tuning import tune_for_serving
from tests.support.backends import create_database, drop_database
from tests.support.private_postgres import PrivatePostgres

UPDATE_BYTES = 40
TICK_S = 0.001


@dataclass
class RateResult:
    offered: int
    seconds: float
    committed: int
    latencies_ms: list[float]
    batches: int
    process_cpu_s: float  # this process: load generation and the whole write path
    postgres_cpu_s: float | None  # every Postgres process (private cluster only)

    @property
    def rows_per_s(self) -> float:
        return self.committed / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def _create_projects(store: DocumentStore, count: int) -> list[str]:
    ids = [f"bench-{i:05d}" for i in range(count)]
    update = initial_update("bench", 1000.0, "USD", {})
    for start in range(0, count, 50):
        await asyncio.gather(
            *(store.create_project(p, "bench", update, "bench") for p in ids[start : start + 50])
        )
    return ids


class _Acks:
    """Ack latencies as they come. Only a count of outstanding updates is kept, not the
    futures themselves: holding every future alive makes the garbage collector's full
    passes grow with the run (pauses of 100+ ms that would be charged to the database).
    """

    def __init__(self) -> None:
        self.latencies_ms = array("d")
        self.outstanding = 0
        self.drained = asyncio.Event()

    def track(self, future: asyncio.Future[int]) -> None:
        started = time.perf_counter()
        self.outstanding += 1
        future.add_done_callback(lambda _: self._done(started))

    def _done(self, started: float) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.outstanding -= 1
        if not self.outstanding:
            self.drained.set()


def _cpu_us_per_row(cpu_s: float | None, rows: int) -> str:
    return "n/a" if cpu_s is None else f"{cpu_s / max(rows, 1) * 1e6:.0f}"


async def _offer(
    log: UpdateLog,
    projects: list[str],
    rate: int,
    seconds: float,
    postgres_cpu: Callable[[], float] | None,
    awaited: bool,
) -> RateResult:
    """Append at `rate` per second for `seconds`, then wait for every ack."""
    rng = random.Random(rate)
    acks = _Acks()
    commits = 0

    def count_commit(rows: int, seconds: float) -> None:
        nonlocal commits
        commits += 1

    log.on_batch.append(count_commit)
    cpu_before = time.process_time(), postgres_cpu() if postgres_cpu else 0.0
    begin = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - begin) < seconds:
        due = int(rate * elapsed) - sent
        for _ in range(due):
            update = rng.randbytes(UPDATE_BYTES)
            acks.track(log.append(rng.choice(projects), update, "bench", awaited=awaited))
        sent += due
        await asyncio.sleep(TICK_S)
    if acks.outstanding:
        await asyncio.wait_for(acks.drained.wait(), 60)
    total = time.perf_counter() - begin
    process_cpu = time.process_time() - cpu_before[0]
    pg_cpu = postgres_cpu() - cpu_before[1] if postgres_cpu else None
    log.on_batch.remove(count_commit)
    return RateResult(rate, total, sent, list(acks.latencies_ms), commits, process_cpu, pg_cpu)


async def _database_version(url: str | None) -> str:
    if url is None:
        return f"SQLite {sqlite3.sqlite_version}"
    conn = await asyncpg.connect(url)
    try:
        server = await conn.fetchval("SHOW server_version")
        return f"PostgreSQL {server}, asyncpg {version('asyncpg')}"
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> list[RateResult]:
    seconds = 3.0 if args.quick else args.seconds
    rates = [int(r) for r in args.rates.split(",")]
    projects, private, sqlite = args.projects, args.private, args.sqlite
    cluster = PrivatePostgres().init_and_start() if private else None
    folder = tempfile.TemporaryDirectory(prefix="bench-sqlite-") if sqlite else None
    if folder is not None:
        url = None
    else:
        url = await cluster.create_database("bench") if cluster else await create_database()
    store = make_store(url, Path(folder.name if folder else "."))
    try:
        await store.open(migrate_schema=True)
        ids = await _create_projects(store, projects)
        if not args.default_gc:
            tune_for_serving()  # as `blackboard serve` does
        log = UpdateLog(store)
        log.start()
        machine = describe()
        print(
            f"machine: {machine['cores']} cores, {machine['cpu']}, {machine['ram']},"
            f" {machine['kernel']}; Python {machine['python']},"
            f" {await _database_version(url)},"
            f" event loop {type(asyncio.get_running_loop()).__module__.split('.')[0]};"
            f" load average {os.getloadavg()[0]:.2f} at start"
        )
        where = "SQLite" if sqlite else "a private cluster" if private else "the shared cluster"
        print(
            f"{projects} projects, {UPDATE_BYTES}-byte updates, {seconds:g} s per rate,"
            f" on {where}, {'default' if args.default_gc else 'serving'} GC settings,"
            f" {'unawaited' if args.unawaited else 'awaited'} appends\n"
        )
        print(
            "| offered/s | rows/s | ack p50 ms | ack p99 ms | ack max ms | rows/commit"
            " | CPU µs/update: process | Postgres |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        postgres_cpu = (lambda: sum(map(cpu_seconds, cluster.server_pids()))) if cluster else None
        results = []
        for rate in rates:
            result = await _offer(log, ids, rate, seconds, postgres_cpu, not args.unawaited)
            results.append(result)
            print(
                f"| {rate:,} | {result.rows_per_s:,.0f} | {result.percentile(50):.2f}"
                f" | {result.percentile(99):.2f} | {max(result.latencies_ms):.2f}"
                f" | {result.committed / max(result.batches, 1):.1f}"
                f" | {_cpu_us_per_row(result.process_cpu_s, result.committed)}"
                f" | {_cpu_us_per_row(result.postgres_cpu_s, result.committed)} |",
                flush=True,
            )
        await log.stop(30)
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
        return results
    finally:
        await store.close()
        if cluster:
            cluster.destroy()
        elif folder is not None:
            folder.cleanup()
        else:
            await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.durable_writes", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    parser.add_argument("--rates", default="5000,10000,20000", help="comma-separated rates")
    parser.add_argument("--projects", type=int, default=1000)
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--private", action="store_true", help="run on a private cluster")
    database.add_argument("--sqlite", action="store_true", help="run on the embedded SQLite")
    parser.add_argument(
        "--unawaited",
        action="store_true",
        help="appends nobody awaits (a stock Yjs client's updates: commits paced longer)",
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="keep CPython's GC settings (for comparison)"
    )
    args = parser.parse_args()
    try:
        import uvloop  # the server runs on uvloop (uvicorn[standard]); measure the same

        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
