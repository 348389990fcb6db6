"""Budget ops benchmark: one hot project, 64 concurrent clients, on Postgres (DESIGN.md
section 4; goal >= 3,000 ops/s with p99 < 25 ms, invariants intact).

Each client loops over a mix of ops with fresh idempotency keys: reserve then commit
(part of it), reserve then release, and charge; a small top-up now and then. Two
targets, one after the other:

- `http`: a real `blackboard serve` process; each client has its own keep-alive HTTP
  connection (a minimal HTTP/1.1 client, so the load generator's CPU stays small) and
  the latency is from the first byte sent to the last byte of the reply;
- `ledger`: `sync.authority.ledger.BudgetLedger` in this process, no HTTP: what the ledger
  itself sustains (batching, row lock, idempotency keys, commit).

After each run the ledger is read back and checked: one ledger row per op that got a
200 and no other, the rows replay exactly to the final balances, and no row shows
`reserved + spent > total`.

    python -m bench.budget_ops            # 10 s per target
    python -m bench.budget_ops --quick    # 3 s per target, for a smoke run

The database is a fresh one next to BLACKBOARD_TEST_DATABASE_URL, or with `--private` a
private cluster started for the run (so other work on the shared cluster, e.g. test
suites creating and dropping databases, does not stall its commits). Server, Postgres
and clients share this machine. Results go to bench/RESULTS.md under "Budget ops".
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.machine import describe
from bench.procstat import cpu_seconds
from blackboard.persistence.factory import make_store
from blackboard.schemas.money import parse_amount
from blackboard.sync.authority.ledger import BudgetLedger
from blackboard.sync.projects.creation import create_project
from blackboard.web.api.budget import parse_op
from tests.support.backends import create_database, drop_database, migrate_database
from tests.support.budget_workload import check_ledger
from tests.support.private_postgres import PrivatePostgres
from tests.support.server import ServerProcess

PROJECT = "hot"
BUDGET_TOTAL = 10_000_000
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Budget ops"

Reply = tuple[int, dict[str, Any]]
Send = Callable[[dict[str, Any]], Awaitable[Reply]]


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough to POST JSON."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: dict[str, Any]) -> Reply:
        payload = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


@dataclass
class Run:
    target: str
    label: str  # prefix of this run's idempotency keys
    seconds: float = 0.0
    latencies_ms: array = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)
    succeeded: set[str] = field(default_factory=set)
    cpu_s: dict[str, float] = field(default_factory=dict)  # by role, during the run
    verdict: str = ""

    @property
    def ops(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _client(send: Send, index: int, stop_at: float, run: Run) -> None:
    rng = random.Random(index)
    keys = (f"{run.label}-c{index}-{n}" for n in itertools.count())

    async def op(body: dict[str, Any]) -> dict[str, Any]:
        key = next(keys)
        started = time.perf_counter()
        status, reply = await send({**body, "idempotency_key": key})
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
        run.statuses[status] = run.statuses.get(status, 0) + 1
        if status == 200:
            run.succeeded.add(key)
        return reply if status == 200 else {}

    while time.perf_counter() < stop_at:
        amount = rng.choice((1, 2, "2.5", "7.25", 12))
        pick = rng.random()
        if pick < 0.3:
            await op({"op": "charge", "amount": amount, "ref": "render"})
        elif pick < 0.32:
            await op({"op": "topup", "amount": 50})
        else:
            reserved = await op({"op": "reserve", "amount": amount})
            if not reserved:
                continue
            rid = reserved["reservation_id"]
            if pick < 0.7:
                await op({"op": "commit", "reservation_id": rid, "amount": 1})
            else:
                await op({"op": "release", "reservation_id": rid})


def _postgres_cpu() -> float:
    """CPU seconds of every Postgres process (the cluster may serve others too: the
    figure is an upper bound)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(entry.name))
        except OSError:  # exited meanwhile
            continue
    return total


async def _load(
    target: str, label: str, senders: list[Send], seconds: float, pids: dict[str, int]
) -> Run:
    run = Run(target, label)

    def cpu() -> dict[str, float]:
        return {role: cpu_seconds(pid) for role, pid in pids.items()} | {
            "postgres": _postgres_cpu()
        }

    before = cpu()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_client(send, i, stop_at, run) for i, send in enumerate(senders)))
    run.seconds = time.perf_counter() - started
    after = cpu()
    run.cpu_s = {role: after[role] - before[role] for role in after}
    return run


def _check(run: Run, rows: list[dict[str, Any]], balances: dict[str, Any]) -> None:
    """The ledger (warm-up included) against the run's replies and the balances; raises
    on any violation."""
    keys = [row["idempotency_key"] for row in rows]
    assert len(set(keys)) == len(keys), "a key took effect twice"
    measured = {key for key in keys if key.startswith(f"{run.label}-")}
    assert measured == run.succeeded, "ledger rows and 200 replies differ"
    check_ledger(rows, balances, BUDGET_TOTAL)
    run.verdict = (
        f"{len(rows):,} ledger rows, one per 200, replayed exactly to the balances;"
        " reserved + spent <= total in every row"
    )


async def _over_http(url: str, clients: int, seconds: float) -> Run:
    server = await ServerProcess(
        Path(tempfile.mkdtemp(prefix="bb-bench-budget-")),
        {"BLACKBOARD_DATABASE_URL": url, "BLACKBOARD_LOG_LEVEL": "warning"},
    ).start()
    assert server.proc is not None
    connections: list[Connection] = []
    try:
        async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
            created = await http.post(
                "/api/projects",
                json={"project_id": PROJECT, "title": "bench", "budget_total": BUDGET_TOTAL},
            )
            assert created.status_code == 201, created.text
            connections = [await Connection.open(server.port) for _ in range(clients)]
            path = f"/api/projects/{PROJECT}/budget/ops"
            senders: list[Send] = [lambda body, c=c: c.post(path, body) for c in connections]
            pids = {"server": server.proc.pid, "clients": os.getpid()}
            await _load("http", "warm", senders, min(1.0, seconds), pids)
            run = await _load("http", "run", senders, seconds, pids)
            rows: list[dict[str, Any]] = []
            cursor = ""
            while cursor is not None:
                page = (
                    await http.get(
                        f"/api/projects/{PROJECT}/budget/ledger",
                        params={"limit": 1000, "cursor": cursor},
                    )
                ).json()
                rows.extend(page["items"])
                cursor = page["next_cursor"]
            balances = (await http.get(f"/api/projects/{PROJECT}/budget")).json()
        _check(run, rows, balances)
    finally:
        for connection in connections:
            connection.close()
        await server.close()
    return run


async def _in_process(url: str, clients: int, seconds: float) -> Run:
    store = make_store(url, Path("."))
    await store.open(migrate_schema=False)
    ledger = BudgetLedger(store.db)
    ledger.start()
    try:
        total = parse_amount(BUDGET_TOTAL)
        await create_project(store, PROJECT, "bench", total, "USD", {}, "bench")

        async def send(body: dict[str, Any]) -> Reply:
            reply = await ledger.submit(PROJECT, parse_op(body), "bench")
            return reply.status, reply.body

        pids = {"process": os.getpid()}
        await _load("ledger", "warm", [send] * clients, min(1.0, seconds), pids)
        run = await _load("ledger", "run", [send] * clients, seconds, pids)
        rows = [entry.to_json() for entry in await ledger.entries(PROJECT, 0, 10**9)]
        balances = await ledger.balances(PROJECT)
        assert balances is not None
        _check(run, rows, balances.to_json())
    finally:
        await ledger.stop(30)
        await store.close()
    return run


async def run(seconds: float, clients: int, private: bool) -> str:
    cluster = PrivatePostgres().init_and_start() if private else None
    runs = []
    try:
        for target in (_over_http, _in_process):
            url = (
                await cluster.create_database(target.__name__[1:])
                if cluster
                else (
                    await create_database()  # migrated
                )
            )
            if cluster:
                await migrate_database(url)  # as `blackboard migrate` would
            try:
                runs.append(await target(url, clients, seconds))
            finally:
                if not cluster:
                    await drop_database(url)
    finally:
        if cluster:
            cluster.destroy()
    return _report(runs, clients, seconds, private)


def _report(runs: list[Run], clients: int, seconds: float, private: bool) -> str:
    machine = describe()
    command = (
        "python -m bench.budget_ops"
        + ("" if seconds == 10 else f" --seconds {seconds:g}")
        + ("" if clients == 64 else f" --clients {clients}")
        + (" --private" if private else "")
    )
    where = "a private cluster" if private else "the shared cluster"
    lines = [
        SECTION,
        "",
        f"`{command}`: one hot project, {clients} concurrent clients, Postgres ({where}),"
        f" {seconds:g} s per target after a 1 s warm-up. Mix: reserve + commit, reserve +"
        " release, charge, some top-ups; every op a fresh idempotency key. `http`: a real"
        " server process, one keep-alive connection per client; `ledger`: the ledger in"
        " the benchmark's process, no HTTP.",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram']},"
        f" Python {machine['python']}; server, Postgres and clients share it (load average"
        f" {os.getloadavg()[0]:.1f} at the end: other work was running too).",
        "",
        "| target | ops/s | p50 ms | p99 ms | max ms | ops | replies | CPU ms per op |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        statuses = ", ".join(f"{n:,} x {s}" for s, n in sorted(run.statuses.items()))
        cpu = ", ".join(f"{role} {s / run.ops * 1000:.2f}" for role, s in run.cpu_s.items())
        lines.append(
            f"| {run.target} | {run.ops / run.seconds:,.0f} | {run.percentile(50):.2f}"
            f" | {run.percentile(99):.2f} | {max(run.latencies_ms):.2f} | {run.ops:,}"
            f" | {statuses} | {cpu} |"
        )
    lines.append("")
    for run in runs:
        ops_s, p99 = run.ops / run.seconds, run.percentile(99)
        goal = "met" if ops_s >= 3000 and p99 < 25 else "not met"
        lines.append(f"- `{run.target}`: goal (>= 3,000 ops/s, p99 < 25 ms) {goal}; {run.verdict}.")
    return "\n".join(lines) + "\n"


def _write_results(section: str) -> None:
    """Replace (or add) the "Budget ops" section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.budget_ops", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per target instead of 10")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--private", action="store_true", help="run on a private cluster")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    try:
        import uvloop  # the server runs on uvloop (uvicorn[standard]); so do the clients

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    report = runner(run(seconds, args.clients, args.private))
    print(report)
    if not args.no_write:
        _write_results(report)


if __name__ == "__main__":
    main()
