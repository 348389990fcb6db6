"""Hostile soak: one instance (default limits) under a presence flood and 1,000
slow-header sockets while 50 honest clients edit one room.

Honest side (this process, from 127.0.0.1): 50 clients in one room, each sending stamped
updates (`bench.loadgen.updates`) at 2/s and a presence heartbeat at 1/s; every delivery
to the 49 others is timed. Phases, each as long: quiet, slow headers only, presence flood
only, both at once. The attacks run in a separate process (`--attack`):
- slow headers: 1,000 sockets from 127.0.0.2 each sending half a request line, reopened
  as soon as the server closes one (1 s later if it was refused at once, over the
  connection rate);
- presence flood, from 127.0.0.3: two connections in a loop sending one awareness message
  of 10,000 new client ids each (then closed 4400, and reconnecting; 10 ms after a
  refused connect), and one connection cycling its 4 ids through set and remove as fast
  as the message rate allows.
Measured per phase: honest delivery p50/p99/max, deliveries missing, `/healthz` latency,
server RSS (sampled every 0.25 s), open descriptors, and CPU of the server and attacker.

    python -m bench.hostile_soak            # 4 phases of 30 s
    python -m bench.hostile_soak --quick    # 4 phases of 8 s

Writes its section under "Hostile soak" in bench/RESULTS.md (`--no-write` to print it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop
import websockets

from bench.cross_instance import write as write_section
from bench.loadgen.client import BenchClient
from bench.loadgen.stats import summary_ms
from bench.loadgen.updates import UpdateStream
from bench.loadgen.wire import Framing
from bench.procstat import cpu_seconds, rss_bytes
from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    awareness_message,
    encode_awareness,
    sync_step1,
)
from blackboard.web.open_files import raise_open_files
from tests.support.server import ServerProcess

HEADING = "## Hostile soak"
PROJECT = "bench-hostile"
HONEST = 50
EDITS_HZ = 2.0  # per honest client
SLOW_SOCKETS = 1_000
SLOW_FROM = "127.0.0.2"
FLOOD_FROM = "127.0.0.3"
FLOOD_IDS = 10_000
GOAL_P99_MS = 50.0
RSS_BOUND_MB = 400  # the stated bound: see the section's notes
SAMPLE_S = 0.25
NEVER = 2**63
READY = b"ready\n"
# The attacker shares the machine's 2 CPUs with the server and the honest clients, so a
# refused connection is retried after a pause (slow sockets; the flooders after 1/100 of
# it): up to 1,000 + 200 attempts a second, not as many as a spinning loop can make.
REFUSED_RETRY_S = 1.0


ATTACKS = ("slow", "flood")
PHASES = (("quiet", ()), ("slow headers", ("slow",)), ("presence flood", ("flood",)))
PHASES += (("both", ATTACKS),)


@dataclass
class Phase:
    name: str
    attacks: tuple[str, ...]
    start_ns: int = NEVER  # set when the phase starts (its attacker is ready)
    end_ns: int = NEVER
    server_pid: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core
    attack_result: dict[str, object] = field(default_factory=dict)
    samples: list[int] = field(default_factory=list)
    sent: int = 0
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    healthz_ms: list[float] = field(default_factory=list)


class Deliveries:
    """Each received stamp goes to the phase its update was sent in."""

    def __init__(self, phases: list[Phase]) -> None:
        self.phases = phases

    def record(self, found: list[tuple[int, int]], now: int) -> None:
        for _tag, sent_ns in found:
            for phase in self.phases:
                if phase.start_ns <= sent_ns < phase.end_ns:
                    phase.samples.append(now - sent_ns)


# --- the attack (its own process) ------------------------------------------


async def _slow_socket(port: int, stop: float, counts: dict[str, int]) -> None:
    """Half a request line, again each time the server closes it; one refused (closed
    before the header timeout) is retried after REFUSED_RETRY_S."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(SLOW_FROM, 0)
            )
        except OSError:
            await asyncio.sleep(0.05)
            continue
        opened = loop.time()
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            if await asyncio.wait_for(reader.read(), max(0.1, stop - loop.time())) != b"":
                continue
        except (OSError, TimeoutError) as exc:
            if not isinstance(exc, ConnectionResetError):
                continue
        finally:
            writer.close()
        refused = loop.time() - opened < 1.0
        key = "refused" if refused else "closed by the header timeout"
        counts[key] = counts.get(key, 0) + 1
        if refused:
            await asyncio.sleep(REFUSED_RETRY_S)


def _ids_message(first: int, count: int, clock: int, state: str) -> bytes:
    entries = [AwarenessEntry(first + i, clock, state) for i in range(count)]
    return awareness_message(encode_awareness(entries))


async def _id_flooder(url: str, stop: float, codes: dict[str, int], seed: int) -> None:
    loop = asyncio.get_running_loop()
    # Built once: the server closes the sender before storing any of it, so its ids stay
    # new each time.
    flood = _ids_message(seed * 10**8, FLOOD_IDS, 1, '{"flood":true}')
    while loop.time() < stop:
        try:
            async with websockets.connect(
                url, local_addr=(FLOOD_FROM, 0), max_size=None, open_timeout=10
            ) as ws:
                await ws.send(sync_step1(b"\x00"))
                await ws.send(flood)
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for _ in ws:
                        pass
                code = str(ws.close_code)
        except (OSError, websockets.ConnectionClosed, websockets.InvalidMessage):
            code = "refused"  # closed or reset before the handshake
            await asyncio.sleep(REFUSED_RETRY_S / 100)
        except (TimeoutError, websockets.InvalidHandshake):
            code = "connect failed"
            await asyncio.sleep(0.1)
        codes[code] = codes.get(code, 0) + 1


async def _churner(url: str, stop: float, counts: dict[str, int]) -> None:
    """Four ids set then removed, over and over, under the message rate limit."""
    loop = asyncio.get_running_loop()
    round_, base = 0, 9 * 10**8
    while loop.time() < stop:
        try:
            async with websockets.connect(
                url, local_addr=(FLOOD_FROM, 0), max_size=None, open_timeout=10
            ) as ws:
                await ws.send(sync_step1(b"\x00"))
                while loop.time() < stop:
                    round_ += 1
                    first = base + round_ * 4
                    await ws.send(_ids_message(first, 4, 1, json.dumps({"n": "x" * 1000})))
                    await ws.send(_ids_message(first, 4, 2, "null"))
                    counts["messages"] = counts.get("messages", 0) + 2
                    await asyncio.sleep(0.005)  # ~400 messages/s, under the 500/s limit
        except websockets.ConnectionClosed as exc:
            key = f"closed {exc.rcvd.code if exc.rcvd else None}"
            counts[key] = counts.get(key, 0) + 1
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            counts["connect failed"] = counts.get("connect failed", 0) + 1
            await asyncio.sleep(0.1)


async def attack(port: int, seconds: float, attacks: list[str]) -> dict[str, object]:
    raise_open_files()
    url = f"ws://127.0.0.1:{port}/sync/{PROJECT}"
    stop = asyncio.get_running_loop().time() + seconds
    slow: dict[str, int] = {}
    flood_codes: dict[str, int] = {}
    churn: dict[str, int] = {}
    tasks = []
    if "slow" in attacks:
        tasks += [_slow_socket(port, stop, slow) for _ in range(SLOW_SOCKETS)]
    if "flood" in attacks:
        tasks += [_id_flooder(url, stop, flood_codes, seed) for seed in (1, 2)]
        tasks.append(_churner(url, stop, churn))
    await asyncio.gather(*tasks)
    result: dict[str, object] = {}
    if "slow" in attacks:
        result["slow sockets"] = slow
    if "flood" in attacks:
        result["flood messages: close codes"] = flood_codes
        result["churn"] = churn
    return result


async def _run_phase(port: int, phase: Phase, seconds: float) -> None:
    """The phase's attacks in their own process; the phase starts once it is ready."""
    attacker = None
    if phase.attacks:
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.hostile_soak",
            "--attack",
            str(port),
            "--seconds",
            str(seconds),
            "--attacks",
            ",".join(phase.attacks),
            stdout=asyncio.subprocess.PIPE,
        )
        assert attacker.stdout is not None
        assert await asyncio.wait_for(attacker.stdout.readline(), 60) == READY
    phase.start_ns = time.monotonic_ns()
    phase.end_ns = phase.start_ns + int(seconds * 1e9)
    pids = {"server": phase.server_pid, **({"attacker": attacker.pid} if attacker else {})}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    phase.cpu = {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}
    if attacker is not None:
        out, _ = await asyncio.wait_for(attacker.communicate(), 60)
        phase.attack_result = json.loads(out.decode() or "{}")


# --- the honest side and the measurement ------------------------------------


async def _honest_writer(
    client: BenchClient, stream: UpdateStream, phases: list[Phase], done: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(random.random() / EDITS_HZ)  # spread the writers out
    start = loop.time()
    for index in range(len(stream)):
        await asyncio.sleep(max(0.0, start + index / EDITS_HZ - loop.time()))
        now = time.monotonic_ns()
        if done.is_set() or not client.open:
            return
        await client.send_update(stream.stamped(index, now))
        if index % int(EDITS_HZ) == 0:
            await client.send_awareness()
        for phase in phases:
            phase.sent += phase.start_ns <= now < phase.end_ns


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _sample(server: ServerProcess, phases: list[Phase]) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            now = time.monotonic_ns()
            phase = next((p for p in phases if p.start_ns <= now < p.end_ns), None)
            started = time.monotonic()
            ok = (await http.get(f"{server.http}/healthz")).status_code == 200
            took = (time.monotonic() - started) * 1000 if ok else float("inf")
            if phase is not None:
                phase.healthz_ms.append(took)
                phase.rss.append(rss_bytes(pid))
                phase.fds.append(_open_fds(pid))
            await asyncio.sleep(SAMPLE_S)


async def measure(phase_s: float) -> dict[str, object]:
    raise_open_files()
    folder = Path(tempfile.mkdtemp(prefix="bb-bench-hostile-"))
    server = await ServerProcess(folder).start()
    assert server.proc is not None
    pid = server.proc.pid
    clients: list[BenchClient] = []
    try:
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            body = {"project_id": PROJECT, "title": "bench", "budget_total": 1}
            assert (await http.post("/api/projects", json=body)).status_code == 201
        deliveries = Deliveries([])
        url = f"{server.ws}/sync/{PROJECT}"
        clients = [BenchClient(url, Framing(), deliveries.record) for _ in range(HONEST)]
        for client in clients:
            await client.connect()
        rss_joined = rss_bytes(pid)
        phases = deliveries.phases = [
            Phase(name, attacks, server_pid=pid) for name, attacks in PHASES
        ]
        count = int((len(phases) * (phase_s + 3) + 3) * EDITS_HZ) + 2
        streams = [UpdateStream(tag=n + 1, count=count) for n in range(HONEST)]
        sampler = asyncio.create_task(_sample(server, phases))
        done = asyncio.Event()
        writers = [
            asyncio.create_task(_honest_writer(c, s, phases, done))
            for c, s in zip(clients, streams, strict=True)
        ]
        await asyncio.sleep(1.0)  # the writers spread out over the first second
        for phase in phases:
            await _run_phase(server.port, phase, phase_s)
        done.set()
        await asyncio.gather(*writers)
        await asyncio.sleep(1.0)  # the last deliveries
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        return {
            "phase_s": phase_s,
            "rss_joined": rss_joined,
            "peak_rss": max(max(p.rss) for p in phases),
            "phases": [_phase_row(p) for p in phases],
            "honest_closed": sum(1 for c in clients if not c.open),
            "load_average": os.getloadavg()[0],
        }
    finally:
        for client in clients:
            await client.close()
        await server.stop()


def _phase_row(phase: Phase) -> dict[str, object]:
    expected = phase.sent * (HONEST - 1)
    return {
        "name": phase.name,
        **summary_ms(phase.samples),
        "expected": expected,
        "rss_max": max(phase.rss),
        "fds_max": max(phase.fds),
        "healthz_max_ms": round(max(phase.healthz_ms), 1),
        "cpu": phase.cpu,
        "attack": phase.attack_result,
    }


NOTES = f"""\
The bound: RSS stays under {RSS_BOUND_MB} MB. Where it comes from: the attack cannot
store presence (a connection claiming a fifth client id is closed 4400 before anything
of its message is kept; removed ids are forgotten after 30 s and capped at the room's
10,000); the slow sockets cost a socket and a timer each and are closed after 5 s
(`BLACKBOARD_HEADER_TIMEOUT_S`), at most 1,000 per address
(`BLACKBOARD_MAX_CONNECTIONS_PER_ADDRESS`), opened at most 20 a second after a burst of
200 (so about 300 are pending, not 1,000). What is left is the messages in flight: a
flood message is read whole (up to the 1 MiB message limit) before it is refused.
Not covered here: a connection within every limit that renews 4 states of 64 KiB as
fast as the message rate allows (500/s) is relayed to every client of the room (batched
per 50 ms tick, newest state per id); in a big room that is bandwidth, bounded per
client by the 4 MiB send queue (a client that cannot keep up is closed 1013).

Where the attack's cost goes (profiled 2026-12-06 with py-spy, connection rate limit
off): connections, not presence. The flooders, closed 4400 at their fifth new id,
reconnected about 170 times a second from one address; each was a whole WebSocket
handshake, a room join (step 1, the full-document step 2 their empty state vector asks
for, the presence snapshot), a close and four INFO log lines. That path took about a
third of the server's busy samples (handshake and accept 9% of all samples, logging 5%,
join 3%, close 3%), about 1 ms per connection; the server's CPU went from 26% (quiet) to
61% of a core and honest p99 to 101-205 ms. The loop was not saturated: the tail is
those bursts plus the attacker's and the honest clients' processes competing with the
server for the 2 shared CPUs. Hence `BLACKBOARD_CONNECTION_RATE_PER_ADDRESS` (20/s after
a burst of 200; the flooders now get about 27 joins a second over the phase) and its
gate, which closes an over-rate connection before uvicorn's protocol is made: with the
refusal inside uvicorn's protocol (about 67 us of Python each) the slow sockets, refused
and retried in step every second, still cost a p99 of 131 ms (at a load average near 6).
The tails follow the shared machine: at a load average near 8 a run measured p99 114 ms
in the quiet phase. The attacker retries refused connections after a pause (see the
setup above); one spinning on them from this machine takes a CPU from the server.
"""


def render(result: dict[str, object]) -> str:
    phases: list[dict] = result["phases"]  # type: ignore[assignment]
    lines = [
        HEADING,
        "",
        f"`python -m bench.hostile_soak` ({time.strftime('%Y-%m-%d')}): one instance"
        " (embedded SQLite, default limits), one room, 50 honest clients (127.0.0.1) each"
        f" sending {EDITS_HZ:g} stamped edits/s and a presence heartbeat at 1/s; latency from"
        " send to receipt at each of the 49 others. Four phases of"
        f" {result['phase_s']:g} s: quiet; {SLOW_SOCKETS:,} slow-header sockets from"
        f" {SLOW_FROM} (half a request line each, reopened as soon as the server closes it,"
        f" {REFUSED_RETRY_S:g} s later if it was refused at once); a presence flood from"
        f" {FLOOD_FROM} (two connections sending awareness messages of {FLOOD_IDS:,} new"
        " client ids, reconnecting after each close, 10 ms after a refused connect, and one"
        " cycling 4 ids through set and remove at up to 400 messages/s); both at once."
        " The attacks run in a separate process. **The machine is shared**: 2 CPUs, also"
        " running other engineers' test suites during the run (load average"
        f" {result['load_average']:.1f} at the end), so the tails include their load;"
        f" Python {platform.python_version()}.",
        "",
        "| phase | deliveries (of expected) | p50 ms | p99 ms | max ms | RSS max MB"
        " | open fds max | /healthz max ms | CPU server / attacker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        cpu = " / ".join(f"{share:.0%}" for share in p["cpu"].values())
        lines.append(
            f"| {p['name']} | {p['count']:,} / {p['expected']:,} | {p['p50_ms']}"
            f" | {p['p99_ms']} | {p['max_ms']} | {p['rss_max'] / 1e6:.0f}"
            f" | {p['fds_max']:,} | {p['healthz_max_ms']} | {cpu} |"
        )
    attacked = phases[1:]
    worst = max((p["p99_ms"] for p in attacked), default=None)
    peak = result["peak_rss"] / 1e6  # type: ignore[operator]
    attack_side = "; ".join(f"{p['name']}: {json.dumps(p['attack'])}" for p in attacked)
    lines += [
        "",
        f"RSS after the 50 joined: {result['rss_joined'] / 1e6:.0f} MB"  # type: ignore[operator]
        f"; peak {peak:.0f} MB. Honest sockets closed: {result['honest_closed']}."
        f" Attack side: {attack_side}.",
        "",
        f"Goals: honest p99 under attack < {GOAL_P99_MS:g} ms:"
        f" {'met' if worst is not None and worst < GOAL_P99_MS else 'NOT met'} (worst phase"
        f" {worst} ms); RSS < {RSS_BOUND_MB} MB: {'met' if peak < RSS_BOUND_MB else 'NOT met'}.",
        "",
        NOTES,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="phases of 8 s")
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase")
    parser.add_argument("--attack", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.attack:
        attacks = [a for a in args.attacks.split(",") if a]
        sys.stdout.buffer.write(READY)  # imports done: the phase starts now
        sys.stdout.flush()
        print(json.dumps(uvloop.run(attack(args.attack, args.seconds, attacks))))
        return
    section = render(uvloop.run(measure(8.0 if args.quick else args.seconds)))
    print(section)
    if not args.no_write:
        write_section(section, heading=HEADING)


if __name__ == "__main__":
    main()
