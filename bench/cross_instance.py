"""Cross-instance delivery: two Blackboard instances sharing one Postgres and one Redis.

One room. One writer on instance A sends stamped updates (`bench.loadgen.updates`) at a
fixed rate (1,000/s by default); readers on A (single-process delivery) and readers on B
(delivery through Redis) receive them at the same time, under the same load, so the
difference between the two groups is what crossing instances adds. Also counts Redis
messages per update: PUBLISH calls (INFO commandstats of a private redis-server started
for the run) and update messages seen by a subscriber on the room's channel.

    python -m bench.cross_instance            # 3 runs of 10 s measured
    python -m bench.cross_instance --quick    # 1 run of 3 s

Writes its table under "Cross-instance delivery" in bench/RESULTS.md (`--no-write` to
only print it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from bench.loadgen.client import BenchClient
from bench.loadgen.stats import summary_ms
from bench.loadgen.updates import UpdateStream, stamps
from bench.loadgen.wire import Framing
from bench.procstat import cpu_seconds
from blackboard.sync.wire import peer_messages
from tests.support.backends import create_database, drop_database
from tests.support.private_redis import PrivateRedis
from tests.support.server import ServerProcess

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "## Cross-instance delivery"
PROJECT = "bench-cross"
PREFIX = "bench:"
WARMUP_S = 1.0
DRAIN_S = 1.0
DRAIN_TIMEOUT_S = 60.0
GOAL_MS = 1.0  # added p99 of a delivery through another instance


@dataclass
class Outcome:
    rate: int
    seconds: float
    sent: int  # in the measured window
    total_sent: int  # warm-up included
    local: dict[str, float | int | None]
    remote: dict[str, float | int | None]
    on_redis: dict[str, float | int | None]  # sent -> seen on the Redis channel
    local_readers: int
    remote_readers: int
    publishes: int
    update_messages: int
    cpu: dict[str, float]  # share of one core during the measured window, per process
    load_average: float  # of the machine (1 min), at the end of the run


class Group:
    """Delivery latencies to one group of readers, for updates sent in the window."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.window = (0, 0)
        self.received = 0
        self.expected: int | None = None
        self.complete = asyncio.Event()

    def record(self, found: list[tuple[int, int]], now: int) -> None:
        for _tag, sent_ns in found:
            self.received += 1
            if self.window[0] <= sent_ns < self.window[1]:
                self.samples.append(now - sent_ns)
        self._check()

    def expect(self, count: int) -> None:
        self.expected = count
        self._check()

    def _check(self) -> None:
        if self.expected is not None and self.received >= self.expected:
            self.complete.set()


async def _tap_channel(url: str, counts: list[int], seen: Group) -> None:
    """Count the room's update messages on Redis, and time them (sent -> on the channel)."""
    pubsub = aioredis.Redis.from_url(url).pubsub()
    await pubsub.subscribe(f"{PREFIX}doc:{PROJECT}")
    try:
        async for message in pubsub.listen():
            if message["type"] == "message":
                now = time.monotonic_ns()
                peer = peer_messages.decode(message["data"])
                if peer.kind == peer_messages.UPDATE:
                    counts[0] += 1
                    seen.record(stamps(peer.payload), now)
    finally:
        await pubsub.aclose()


async def _publish_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


async def measure(rate: int, seconds: float, readers_per_instance: int) -> Outcome:
    redis_server = await PrivateRedis().start()
    url = await create_database()
    folder = Path(tempfile.mkdtemp(prefix="bb-bench-cross-"))
    env = {
        "BLACKBOARD_DATABASE_URL": url,
        "BLACKBOARD_REDIS_URL": redis_server.url,
        "BLACKBOARD_REDIS_PREFIX": PREFIX,
        "BLACKBOARD_RATE_LIMIT": str(rate * 4),  # the writer is far above a typist
    }
    a = await ServerProcess(folder, env).start()
    b = await ServerProcess(folder, env).start()
    redis_client = aioredis.Redis.from_url(redis_server.url)
    counts = [0]
    local, remote, on_redis = Group(), Group(), Group()
    counter = asyncio.create_task(_tap_channel(redis_server.url, counts, on_redis))
    clients: list[BenchClient] = []
    try:
        async with httpx.AsyncClient(base_url=a.http, timeout=10) as http:
            body = {"project_id": PROJECT, "title": "bench", "budget_total": 1}
            assert (await http.post("/api/projects", json=body)).status_code == 201
        readers = [
            BenchClient(f"{server.ws}/sync/{PROJECT}", Framing(), group.record)
            for server, group in ((a, local), (b, remote))
            for _ in range(readers_per_instance)
        ]
        writer = BenchClient(f"{a.ws}/sync/{PROJECT}", Framing())
        clients.extend([*readers, writer])
        for client in clients:
            await client.connect()
        total = int(rate * (WARMUP_S + seconds)) + 1
        stream = UpdateStream(tag=1, count=total)

        loop = asyncio.get_running_loop()
        start = loop.time()
        warm_end_ns = time.monotonic_ns() + int(WARMUP_S * 1e9)
        end_ns = warm_end_ns + int(seconds * 1e9)
        local.window = remote.window = on_redis.window = (warm_end_ns, end_ns)
        pids = {"instance A": _pid(a), "instance B": _pid(b), "redis": _pid(redis_server)}
        pids["load generator"] = os.getpid()
        cpu_before: dict[str, float] = {}
        # Redis messages are counted over the whole run (warm-up too), once delivered.
        publishes_before, messages_before = await _publish_calls(redis_client), counts[0]
        sent = sent_in_window = 0
        for index in range(total):
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            now = time.monotonic_ns()
            if now >= warm_end_ns and not cpu_before:
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            if now >= end_ns:
                break
            await writer.send_update(stream.stamped(index, now))
            sent += 1
            sent_in_window += now >= warm_end_ns
        cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / seconds for name, pid in pids.items()}
        for group in (local, remote):
            group.expect(sent * readers_per_instance)
        with contextlib.suppress(TimeoutError):  # the table then shows what is missing
            await asyncio.wait_for(
                asyncio.gather(local.complete.wait(), remote.complete.wait()), DRAIN_TIMEOUT_S
            )
        await asyncio.sleep(DRAIN_S)
        publishes = await _publish_calls(redis_client) - publishes_before
        return Outcome(
            rate=rate,
            seconds=seconds,
            sent=sent_in_window,
            total_sent=sent,
            local=summary_ms(local.samples),
            remote=summary_ms(remote.samples),
            on_redis=summary_ms(on_redis.samples),
            local_readers=readers_per_instance,
            remote_readers=readers_per_instance,
            publishes=publishes,
            update_messages=counts[0] - messages_before,
            cpu=cpu,
            load_average=os.getloadavg()[0],
        )
    finally:
        for client in clients:
            await client.close()
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        await redis_client.aclose()
        await a.stop()
        await b.stop()
        await redis_server.kill()
        await drop_database(url)


def _pid(process: ServerProcess | PrivateRedis) -> int:
    assert process.proc is not None
    return process.proc.pid


NOTES = """\
Where the added time goes (measured 2026-11-23 on this machine): publishing is one
PUBLISH per update, before the commit (waiting for the group commit would add its
~1.3 ms p50). Instance A spends about 17 µs per update on it (publish plus its own echo,
hiredis parser); instance B about 14 µs receiving and parsing a message, 8 µs decoding
it, and about 75 µs in `Room.apply_peer_update` (shadow check, live apply, the document
rules' observers and review, which are most of it), then the sends to its clients. What
the table shows beyond that is the machine: a delivery through another instance crosses
two more processes (Redis, then B), and on 2 CPUs that also run other work (load average
in the table) each hop can wait for a CPU slice, so B's tail follows the load (the
same-instance tail, several ms, shows the same contention).
"""


def render(outcomes: list[Outcome]) -> str:
    """The section: what was run, then one row per run."""
    first = outcomes[0]
    lines = [
        HEADING,
        "",
        f"`python -m bench.cross_instance` ({time.strftime('%Y-%m-%d')}): 2 instances (uvicorn"
        " processes) on one Postgres and a private redis-server, 1 room, 1 writer on instance"
        f" A at {first.rate:,} updates/s for {first.seconds:g} s (after {WARMUP_S:g} s warm-up),"
        f" {first.local_readers} readers on A and {first.remote_readers} on B at the same time;"
        " latency from send to receipt at each reader, so the two groups see the same load"
        " and their difference is what crossing instances adds (goal: p99 within 1 ms)."
        f" Machine: {os.cpu_count()} CPUs shared by Postgres, Redis, both servers, the load"
        f" generator and whatever else runs there (load average in the table);"
        f" Python {platform.python_version()}.",
        "",
        "| run | load avg | same instance p50 / p99 ms | other instance p50 / p99 ms"
        " | added p50 / p99 ms | on the Redis channel p50 / p99 ms | delivered"
        " | Redis msgs per update | CPU A / B / Redis / load gen |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, o in enumerate(outcomes, 1):
        delivered = o.local["count"] + o.remote["count"]  # type: ignore[operator]
        expected = o.sent * (o.local_readers + o.remote_readers)
        cpu = " / ".join(f"{share:.0%}" for share in o.cpu.values())
        lines.append(
            f"| {number} | {o.load_average:.1f} | {o.local['p50_ms']} / {o.local['p99_ms']}"
            f" | {o.remote['p50_ms']} / {o.remote['p99_ms']}"
            f" | {_minus(o.remote['p50_ms'], o.local['p50_ms'])}"
            f" / {_minus(o.remote['p99_ms'], o.local['p99_ms'])}"
            f" | {o.on_redis['p50_ms']} / {o.on_redis['p99_ms']}"
            f" | {delivered:,} / {expected:,}"
            f" | {o.publishes / max(o.total_sent, 1):.3f} ({o.publishes:,} / {o.total_sent:,})"
            f" | {cpu} |"
        )
    met = sum(_added(o, "p99_ms") <= GOAL_MS for o in outcomes)
    median_met = sum(_added(o, "p50_ms") <= GOAL_MS for o in outcomes)
    verdict = (
        f"Goal (added p99 within {GOAL_MS:g} ms): met in {met} of {len(outcomes)} runs;"
        f" added p50 within {GOAL_MS:g} ms in {median_met} of {len(outcomes)}. Redis"
        " messages per update must be exactly 1."
    )
    return "\n".join([*lines, "", verdict, "", NOTES])


def _added(outcome: Outcome, key: str) -> float:
    remote, local = outcome.remote[key], outcome.local[key]
    return float("inf") if remote is None or local is None else remote - local


def _minus(a: float | int | None, b: float | int | None) -> str:
    return "n/a" if a is None or b is None else f"{a - b:.3f}"


def write(section: str, path: Path = RESULTS, heading: str = HEADING) -> None:
    """Replace the section under `heading` of RESULTS.md (or append it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading in text:
        before, _, rest = text.partition(heading)
        following = rest.find("\n## ")
        after = rest[following + 1 :] if following >= 0 else ""
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cross_instance", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s measured")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="updates per second")
    parser.add_argument("--readers", type=int, default=2, help="readers on each instance")
    parser.add_argument("--runs", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    runs = args.runs or (1 if args.quick else 3)
    outcomes = [asyncio.run(measure(args.rate, seconds, args.readers)) for _ in range(runs)]
    section = render(outcomes)
    print(section)
    if not args.no_write:
        write(section)


if __name__ == "__main__":
    main()
