"""What a load generator process does, one function per scenario shape.

Each role connects its clients, announces each measured phase (the runner reads the
server's CPU around it), runs it, and reports raw figures (latency samples in ns,
counts); the runner turns them into the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx

from bench.loadgen.client import BenchClient
from bench.loadgen.control import Control
from bench.loadgen.prometheus import loop_lag, scrape
from bench.loadgen.stats import summary_ms
from bench.loadgen.updates import UpdateStream, big_document_updates
from bench.loadgen.wire import Framing

CONNECT_CONCURRENCY = 64
DRAIN_S = 1.0  # after a phase, for in-flight deliveries to land
SYNC_TIMEOUT_S = 120.0
CHANGE_SETTLE_S = 0.5  # for one update sent on another socket to be applied


class Target:
    """Where the clients connect: a URL template with `{room}`, and the framing."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.url_template: str = spec["url"]
        self.hocuspocus: bool = spec["framing"] == "hocuspocus"

    def client(self, room: str, on_stamps: Any = None) -> BenchClient:
        framing = Framing(document=room) if self.hocuspocus else Framing()
        return BenchClient(self.url_template.format(room=room), framing, on_stamps)


class Deliveries:
    """Delivery latencies of one phase: only updates sent inside the window count."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.window: tuple[int, int] | None = None
        self.sent = 0

    def record(self, found: list[tuple[int, int]], now: int) -> None:
        if self.window is None:
            return
        start, end = self.window
        for _tag, sent_ns in found:
            if start <= sent_ns < end:
                self.samples.append(now - sent_ns)

    def open(self) -> None:
        self.samples, self.sent = [], 0
        self.window = (time.monotonic_ns(), 2**63 - 1)

    def close(self) -> None:
        assert self.window is not None
        self.window = (self.window[0], time.monotonic_ns())

    def in_window(self, sent_ns: int) -> bool:
        return self.window is not None and self.window[0] <= sent_ns < self.window[1]

    def report(self, receivers: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"latency": summary_ms(self.samples), "sent": self.sent}
        if receivers is not None:
            expected = self.sent * receivers
            data["delivered"] = len(self.samples)
            data["delivery_ratio"] = round(len(self.samples) / expected, 4) if expected else None
        data["samples_ns"] = self.samples
        return data


async def connect_all(clients: Iterable[BenchClient], *, sync: bool = True) -> int:
    """Connect (and sync) everyone, a bounded number at a time; returns the failures."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failures = 0

    async def one(client: BenchClient) -> None:
        nonlocal failures
        async with gate:
            try:
                await client.connect(sync=sync)
            except Exception:
                failures += 1

    await asyncio.gather(*(one(c) for c in clients))
    return failures


async def close_all(clients: Iterable[BenchClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def every(period_s: float, action: Callable[[], Awaitable[None]]) -> None:
    """Run `action` every `period_s` from a random phase, on an absolute schedule."""
    loop = asyncio.get_running_loop()
    due = loop.time() + random.uniform(0, period_s)
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            await action()
        except Exception:
            return  # the connection is gone; the report counts closed clients
        due += period_s


@contextlib.asynccontextmanager
async def running(tasks: list[asyncio.Task[None]]) -> AsyncIterator[None]:
    """Cancel and reap `tasks` when the block ends."""
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def writer_task(
    client: BenchClient, stream: UpdateStream, deliveries: Deliveries
) -> Callable[[], Awaitable[None]]:
    index = 0

    async def send() -> None:
        nonlocal index
        if index >= len(stream):
            raise RuntimeError("update stream exhausted")
        now = time.monotonic_ns()
        await client.send_update(stream.stamped(index, now))
        index += 1
        if deliveries.in_window(now):
            deliveries.sent += 1

    return send


class Gaps:
    """The longest silence an observer sees between deliveries of updates sent inside
    the deliveries' window (late arrivals included, so a stall at its end counts)."""

    def __init__(self, deliveries: Deliveries) -> None:
        self.deliveries = deliveries
        self.longest_ns = 0
        self._last: dict[int, int] = {}  # observer -> its last such arrival

    def open(self) -> None:
        self.deliveries.open()
        self.longest_ns = 0
        self._last.clear()

    def observer(self, index: int) -> Callable[[list[tuple[int, int]], int], None]:
        """Observer `index`'s `on_stamps`: records deliveries and the gaps between them."""

        def on_stamps(found: list[tuple[int, int]], now: int) -> None:
            self.deliveries.record(found, now)
            if any(self.deliveries.in_window(sent) for _, sent in found):
                last = self._last.get(index)
                if last is not None:
                    self.longest_ns = max(self.longest_ns, now - last)
                self._last[index] = now

        return on_stamps


def closed(clients: Iterable[BenchClient]) -> int:
    return sum(1 for c in clients if not c.open)


def close_codes(clients: Iterable[BenchClient]) -> dict[str, int]:
    """How the closed ones were closed (1006: the socket dropped without a close frame)."""
    return dict(Counter(str(c.close_code) for c in clients if not c.open))


# --- roles ----------------------------------------------------------------------------


async def echo(spec: dict[str, Any], control: Control) -> None:
    """Two clients in one room, strictly ping-pong: A sends, B answers on receipt."""
    target, room = Target(spec), spec["rooms"][0]
    limit = int(spec["max_round_trips"])
    warmup = int(spec.get("warmup_round_trips", 200))
    mine, theirs = UpdateStream(0, limit + warmup), UpdateStream(1, limit + warmup)
    a_got, b_got = asyncio.Event(), asyncio.Event()
    a = target.client(room, lambda found, _: any(t == 1 for t, _ in found) and a_got.set())
    b = target.client(room, lambda found, _: any(t == 0 for t, _ in found) and b_got.set())
    await connect_all([a])  # one after the other: the room exists before the second joins
    await connect_all([b])
    sent_a = sent_b = 0

    async def answer() -> None:
        nonlocal sent_b
        while True:
            await b_got.wait()
            b_got.clear()
            await b.send_update(theirs.stamped(sent_b))
            sent_b += 1

    async def round_trips(count: int, deadline: float) -> list[int]:
        nonlocal sent_a
        rtts: list[int] = []
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            a_got.clear()
            started = time.monotonic_ns()
            await a.send_update(mine.stamped(sent_a, started))
            sent_a += 1
            try:
                await asyncio.wait_for(a_got.wait(), 5.0)
            except TimeoutError:
                break
            rtts.append(time.monotonic_ns() - started)
        return rtts

    async with running([asyncio.create_task(answer())]):
        await round_trips(warmup, time.monotonic() + 30)
        if await control.ready("echo"):
            started = time.monotonic()
            rtts = await round_trips(limit, started + float(spec["duration_s"]))
            elapsed = time.monotonic() - started
            control.done(
                "echo",
                {
                    "round_trips": len(rtts),
                    "seconds": elapsed,
                    "round_trips_per_s": round(len(rtts) / elapsed, 1),
                    "latency": summary_ms(rtts),
                    "closed": closed([a, b]),
                },
            )
    await close_all([a, b])


async def rooms(spec: dict[str, Any], control: Control) -> None:
    """Many rooms, one writer each at `rate_hz`, the others read; awareness from all."""
    target = Target(spec)
    rate, aware_hz = float(spec["rate_hz"]), float(spec.get("awareness_hz", 0))
    per_room, duration = int(spec["clients_per_room"]), float(spec["duration_s"])
    warmup = float(spec.get("warmup_s", 2.0))
    stream = UpdateStream(0, math.ceil(rate * (duration + warmup + 60)) + 10)
    deliveries = Deliveries()
    writers, readers = [], []
    for room in spec["rooms"]:
        writers.append(target.client(room))
        readers += [target.client(room, deliveries.record) for _ in range(per_room - 1)]
    everyone = writers + readers
    started = time.monotonic()
    # Writers first: each room exists before its readers join (pycrdt-websocket can hang
    # when a room's first joiners arrive together; that is measured nowhere else here).
    failures = await connect_all(writers) + await connect_all(readers)
    connect_s = time.monotonic() - started
    tasks = [
        asyncio.create_task(every(1 / rate, writer_task(w, stream, deliveries))) for w in writers
    ]
    if aware_hz > 0:
        tasks += [asyncio.create_task(every(1 / aware_hz, c.send_awareness)) for c in everyone]
    async with running(tasks):
        await asyncio.sleep(warmup)
        if await control.ready("run"):
            deliveries.open()
            await asyncio.sleep(duration)
            deliveries.close()
            await asyncio.sleep(DRAIN_S)
            data = deliveries.report(receivers=per_room - 1)
            data.update(
                connect_failures=failures,
                connect_s=round(connect_s, 2),
                clients=len(everyone),
                closed=closed(everyone),
                close_codes=close_codes(everyone),
                awareness_in=sum(c.awareness_in for c in everyone),
            )
            control.done("run", data)
    await close_all(everyone)


async def hot_room(spec: dict[str, Any], control: Control) -> None:
    """One room: a writer at `rate_hz` and a growing crowd of observers, each step with
    and without awareness at 1 Hz from everyone. Only one worker hosts the writer."""
    target, room = Target(spec), spec["rooms"][0]
    rate, duration = float(spec["rate_hz"]), float(spec["duration_s"])
    deliveries = Deliveries()
    observers: list[BenchClient] = []
    tasks: list[asyncio.Task[None]] = []
    writer = None
    if spec["writer"]:
        writer = target.client(room)
        await connect_all([writer])
        stream = UpdateStream(0, math.ceil(rate * 3600))
        tasks.append(asyncio.create_task(every(1 / rate, writer_task(writer, stream, deliveries))))
    async with running(tasks):
        for step, share in zip(spec["steps"], spec["shares"], strict=True):
            new = [target.client(room, deliveries.record) for _ in range(share - len(observers))]
            failures = await connect_all(new)
            observers.extend(new)
            for awareness in spec["awareness_modes"]:
                everyone = observers + ([writer] if writer else [])
                presence = (
                    [asyncio.create_task(every(1.0, c.send_awareness)) for c in everyone]
                    if awareness
                    else []
                )
                async with running(presence):
                    await asyncio.sleep(1.0)  # let the presence load settle
                    phase = f"{step}:{'awareness' if awareness else 'updates'}"
                    if not await control.ready(phase):
                        continue
                    deliveries.open()
                    await asyncio.sleep(duration)
                    deliveries.close()
                    await asyncio.sleep(DRAIN_S)
                    data = deliveries.report()
                    data.update(
                        observers=len(observers),
                        connect_failures=failures,
                        closed=closed(observers),
                        close_codes=close_codes(observers),
                    )
                    if writer is not None and not writer.open:
                        data["writer_close_code"] = writer.close_code
                    control.done(phase, data)
    await close_all([*observers, *([writer] if writer else [])])


async def join_storm(spec: dict[str, Any], control: Control) -> None:
    """Seed a big document, then many clients join it at once and then ramped."""
    target, room = Target(spec), spec["rooms"][0]
    updates = big_document_updates(int(spec["doc_bytes"]))
    seeder = target.client(room)
    await connect_all([seeder])
    for update in updates:
        await seeder.send_update(update)
    expected = sum(len(u) for u in updates)
    deadline = time.monotonic() + 60
    while True:  # until a fresh joiner sees the whole document
        probe = target.client(room)
        await connect_all([probe])
        size = probe.step2_bytes
        await probe.close()
        if size >= 0.95 * expected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the document did not reach the server ({size} of {expected})")
        await asyncio.sleep(0.5)
    for mode in spec["modes"]:  # 0 = all at once, else joins per second
        if not await control.ready(f"rate={mode}"):
            continue
        joiners = [target.client(room) for _ in range(int(spec["joiners"]))]

        async def join(client: BenchClient, delay: float) -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await client.connect()

        await asyncio.wait_for(
            asyncio.gather(*(join(c, i / mode if mode else 0) for i, c in enumerate(joiners))),
            SYNC_TIMEOUT_S + len(joiners) / (mode or 1),
        )
        synced = [c for c in joiners if c.synced.is_set()]
        control.done(
            f"rate={mode}",
            {
                "sync": summary_ms([c.sync_time_ns for c in synced]),
                "failed": len(joiners) - len(synced),
                "doc_bytes": expected,
            },
        )
        await close_all(joiners)
        await asyncio.sleep(1.0)
    await seeder.close()


async def cold_join(spec: dict[str, Any], control: Control) -> None:
    """Per room: the first join (which loads it) and a second one (already loaded)."""
    target = Target(spec)
    for room in spec["rooms"]:
        if not await control.ready(room):
            continue
        first, second = target.client(room), target.client(room)
        await connect_all([first])
        await connect_all([second])
        control.done(
            room,
            {
                "first_ms": round(first.sync_time_ns / 1e6, 2) if first.synced.is_set() else None,
                "second_ms": round(second.sync_time_ns / 1e6, 2)
                if second.synced.is_set()
                else None,
                "doc_bytes": first.step2_bytes,
            },
        )
        await close_all([first, second])


async def compactions(http: httpx.AsyncClient) -> tuple[float, float]:
    """How many compactions the server has run, and their seconds in all (Prometheus)."""
    figures = await scrape(http)
    return (
        figures.get("blackboard_compaction_seconds_count", 0.0),
        figures.get("blackboard_compaction_seconds_sum", 0.0),
    )


NO_STALL_PHASES = ("quiet", "load", "join", "compact")


async def no_stall(spec: dict[str, Any], control: Control) -> None:
    """A busy room (a writer at `rate_hz`, `observers` readers) runs throughout; each
    phase is a window of `window_s` from the moment `big_documents` (another worker
    process, so that receiving 20 MB does not hold these clients back) sets off its
    event: nothing, a cold load, a join after a change, a compaction."""
    target, busy = Target(spec), spec["rooms"][0]
    rate, window = float(spec["rate_hz"]), float(spec["window_s"])
    deliveries = Deliveries()
    gaps = Gaps(deliveries)
    writer = target.client(busy)
    observers = [target.client(busy, gaps.observer(i)) for i in range(int(spec["observers"]))]
    await connect_all([writer])
    failures = await connect_all(observers)
    stream = UpdateStream(0, math.ceil(rate * 3600))
    tasks = [asyncio.create_task(every(1 / rate, writer_task(writer, stream, deliveries)))]
    http = httpx.AsyncClient(base_url=spec["http_url"], timeout=SYNC_TIMEOUT_S)
    async with running(tasks):
        await asyncio.sleep(float(spec["warmup_s"]))
        for phase in NO_STALL_PHASES:
            if not await control.ready(phase):
                continue
            gaps.open()
            lag_before = await scrape(http)
            await asyncio.sleep(window)
            deliveries.close()
            stalls, worst_lag_ms = loop_lag(lag_before, await scrape(http))
            await asyncio.sleep(DRAIN_S)
            data = deliveries.report(receivers=len(observers))
            data.update(
                server_stalls=stalls,
                server_worst_lag_ms=worst_lag_ms,
                longest_gap_ms=round(gaps.longest_ns / 1e6, 2),
                connect_failures=failures,
                closed=closed(observers),
            )
            control.done(phase, data)
    await http.aclose()
    await close_all([writer, *observers])


async def big_documents(spec: dict[str, Any], control: Control) -> None:
    """`no_stall`'s events, one a phase: nothing, a client joins the cold `load_room`, a
    fresh one joins it after a change, one update pushes `compact_room`'s log past the
    compaction threshold. Reports how long the server took."""
    target, window = Target(spec), float(spec["window_s"])
    loader = target.client(spec["load_room"])
    joiner = target.client(spec["load_room"])
    compactor = target.client(spec["compact_room"])
    http = httpx.AsyncClient(base_url=spec["http_url"], timeout=SYNC_TIMEOUT_S)

    async def nothing() -> float:
        return 0.0

    async def load() -> float:
        await loader.connect()
        return loader.sync_time_ns / 1e6

    async def join() -> float:
        """A fresh client joins the loaded document after a change to it: the server has
        no step 2 for it at hand, and must not encode the document on its loop."""
        await loader.send_update(UpdateStream(3, 1).stamped(0))
        await asyncio.sleep(CHANGE_SETTLE_S)  # applied before the joiner asks
        await joiner.connect()
        return joiner.sync_time_ns / 1e6

    async def compact() -> float:
        """The server's own duration of the compaction this update sets off (polled
        sparingly: each scrape is work on the server's loop too). The busy room compacts
        too, every 1,000 updates, in a fraction of the time: the longest compaction
        that ended within the window is the big document's."""
        (count, seconds), started = await compactions(http), time.monotonic()
        await compactor.send_update(UpdateStream(2, 1).stamped(0))
        longest = 0.0
        while time.monotonic() - started < window:
            await asyncio.sleep(0.1)
            now_count, now_seconds = await compactions(http)
            if now_count > count:
                longest = max(longest, (now_seconds - seconds) * 1e3)
            count, seconds = now_count, now_seconds
        return longest or math.nan  # nan: none ended within the window

    events = {"quiet": nothing, "load": load, "join": join, "compact": compact}
    for phase in NO_STALL_PHASES:
        if phase == "compact":
            await connect_all([compactor])  # its load is not measured here
            await asyncio.sleep(float(spec["warmup_s"]))
        if not await control.ready(phase):
            continue
        event_ms = await asyncio.wait_for(events[phase](), SYNC_TIMEOUT_S)
        control.done(phase, {"event_ms": None if math.isnan(event_ms) else round(event_ms, 1)})
    await http.aclose()
    await close_all([loader, joiner, compactor])


async def soak(spec: dict[str, Any], control: Control) -> None:
    """One idle client per room; each sends an awareness heartbeat every `heartbeat_s`."""
    target = Target(spec)
    clients = [target.client(room) for room in spec["rooms"]]
    started = time.monotonic()
    failures = await connect_all(clients)
    connect_s = time.monotonic() - started
    control.emit("connected", clients=len(clients), failures=failures, seconds=connect_s)
    beats = [
        asyncio.create_task(every(float(spec["heartbeat_s"]), c.send_awareness)) for c in clients
    ]
    async with running(beats):
        await asyncio.sleep(float(spec["settle_s"]))
        if await control.ready("soak"):
            await asyncio.sleep(float(spec["duration_s"]))
            control.done(
                "soak",
                {
                    "clients": len(clients),
                    "connect_failures": failures,
                    "connect_s": round(connect_s, 2),
                    "closed": closed(clients),
                    "close_codes": close_codes(clients),
                },
            )
    await close_all(clients)


ROLES: dict[str, Callable[[dict[str, Any], Control], Awaitable[None]]] = {
    "echo": echo,
    "rooms": rooms,
    "hot_room": hot_room,
    "join_storm": join_storm,
    "cold_join": cold_join,
    "no_stall": no_stall,
    "big_documents": big_documents,
    "soak": soak,
}
