"""The scenarios, run by the runner against one server at a time (fresh process each).

Each returns `Case`s: one row of its table (e.g. "500 observers, with awareness") with
named figures. Server CPU and RSS come from /proc around each measured phase; latency
and counts come from the load generator processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen.prometheus import scrape
from bench.loadgen.stats import summary_ms
from bench.loadgen.updates import UpdateStream, big_document_updates
from bench.servers import RunningServer, ServerKind
from bench.workers import PhaseResult, Worker, run_phases
from blackboard.persistence.compaction import compact
from blackboard.persistence.factory import make_store
from blackboard.persistence.records import PendingAppend
from blackboard.sync.projects.creation import create_project
from blackboard.web.settings import Settings

MB = 1024 * 1024
# A hot-room step is skipped once the same mode was past this at a smaller crowd.
SATURATED_P99_MS = 1000.0
SATURATED_DELIVERY = 0.9


@dataclass(frozen=True)
class Params:
    """Scenario sizes; `FULL` is the documented default run, `QUICK` a smoke run."""

    workers: int
    echo_s: float
    relay_rooms: int
    relay_rate_hz: float
    relay_s: float
    spread_rooms: int
    spread_s: float
    hot_steps: tuple[int, ...]
    hot_s: float
    join_bytes: int
    join_clients: int
    join_ramp_hz: float
    cold_sizes: tuple[int, ...]
    cold_tails: tuple[int, ...]
    soak_rooms: int
    soak_s: float
    soak_heartbeat_s: float
    busy_cases: tuple[tuple[float, int], ...]  # (writer's updates/s, observers)
    busy_s: float
    stall_bytes: int
    stall_rate_hz: float
    stall_window_s: float
    echo_max_round_trips: int = 400_000
    spread_clients: int = 3
    spread_rate_hz: float = 2.0
    awareness_hz: float = 1.0
    hot_rate_hz: float = 25.0
    settle_s: float = 2.0


# Shorter than the 30 s echo, 120 s spread and 30 min soak, to keep the whole run
# (4 servers, every scenario) short: 26 minutes on 2 shared cores, most of it connecting
# 1,500 observers and 10,000 idle clients per server. RESULTS.md lists what was used.
FULL = Params(
    workers=2,
    echo_s=8,
    relay_rooms=200,
    relay_rate_hz=50,
    relay_s=8,
    spread_rooms=1000,
    spread_s=20,
    hot_steps=(10, 100, 500, 1500),
    hot_s=4,
    join_bytes=4_000_000,
    join_clients=150,
    join_ramp_hz=25,
    cold_sizes=(100_000, 4_000_000, 20_000_000),
    cold_tails=(0, 1, 1000),
    soak_rooms=10_000,
    soak_s=45,
    soak_heartbeat_s=15,
    busy_cases=((1000, 2), (2000, 2), (200, 50)),
    busy_s=8,
    stall_bytes=20_000_000,
    stall_rate_hz=500,
    stall_window_s=3,
)
QUICK = Params(
    workers=1,
    echo_s=1.5,
    relay_rooms=10,
    relay_rate_hz=20,
    relay_s=1.5,
    spread_rooms=20,
    spread_s=1.5,
    hot_steps=(5, 20),
    hot_s=1.5,
    join_bytes=200_000,
    join_clients=10,
    join_ramp_hz=20,
    cold_sizes=(100_000,),
    cold_tails=(0, 1),
    soak_rooms=50,
    soak_s=2,
    soak_heartbeat_s=1,
    busy_cases=((1000, 2), (2000, 2), (200, 50)),
    busy_s=1.5,
    stall_bytes=2_000_000,
    stall_rate_hz=500,
    stall_window_s=1.5,
    echo_max_round_trips=20_000,
    settle_s=0.5,
)


@dataclass
class Case:
    name: str
    figures: dict[str, float | int | str | None] = field(default_factory=dict)


@dataclass
class Context:
    params: Params
    work_dir: Path
    profile_dir: Path | None = None  # py-spy Blackboard's measured phases into it
    _counter: int = 0

    def profile(self, kind: ServerKind, label: str) -> Path | None:
        if self.profile_dir is None or kind.name != "blackboard":
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return self.profile_dir / label

    def fresh_dir(self, label: str) -> Path:
        self._counter += 1
        path = self.work_dir / f"{self._counter:03d}-{label}"
        path.mkdir(parents=True)
        return path


def room_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


@contextlib.asynccontextmanager
async def serving(
    ctx: Context,
    kind: ServerKind,
    label: str,
    rooms: Sequence[str],
    prepare: Callable[[Path], Awaitable[None]] | None = None,
) -> AsyncIterator[RunningServer]:
    data_dir = ctx.fresh_dir(f"{label}-{kind.name}")
    await kind.prepare(data_dir, rooms)
    if prepare is not None:
        await prepare(data_dir)
    server = await RunningServer(kind, data_dir).start()
    try:
        yield server
    finally:
        await server.stop()


async def workers_for(
    server: RunningServer, specs: list[dict[str, Any]], label: str
) -> list[Worker]:
    return [
        await Worker.start({**server.spec(), **spec}, server.data_dir / f"loadgen-{label}-{i}.log")
        for i, spec in enumerate(specs)
    ]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mb(value: float) -> float:
    return round(value / MB, 1)


def _codes(result: PhaseResult) -> str:
    """Close codes of the clients that lost their socket, e.g. `1013: 12` ("-": none)."""
    merged: dict[str, int] = {}
    for data in result.data:
        for code, count in data.get("close_codes", {}).items():
            merged[code] = merged.get(code, 0) + count
    return ", ".join(f"{code}: {n}" for code, n in sorted(merged.items())) or "-"


def _split(items: Sequence[str], parts: int) -> list[list[str]]:
    return [list(items[i::parts]) for i in range(parts) if items[i::parts]]


# --- 1. echo floor ---------------------------------------------------------------------


async def echo(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    rooms = room_ids("echo", 1)
    async with serving(ctx, kind, "echo", rooms) as server:
        spec = {
            "role": "echo",
            "rooms": rooms,
            "duration_s": p.echo_s,
            "max_round_trips": p.echo_max_round_trips,
        }
        workers = await workers_for(server, [spec], "echo")
        (result,) = await run_phases(
            server.pid,
            workers,
            setup_timeout=120,
            phase_timeout=p.echo_s + 60,
            window_s=p.echo_s,
            profile=ctx.profile(kind, "echo"),
        )
    data = result.data[0]
    trips = data["round_trips"]
    return [
        Case(
            "1 room, 2 clients, ping-pong",
            {
                "round trips/s": data["round_trips_per_s"],
                "round trip p50 ms": data["latency"]["p50_ms"],
                "round trip p99 ms": data["latency"]["p99_ms"],
                "server CPU µs per round trip": round(result.cpu_s / trips * 1e6, 1)
                if trips
                else None,
            },
        )
    ]


# --- relay at 10k updates/s in, and 2. spread --------------------------------------------


async def _rooms_scenario(
    ctx: Context,
    kind: ServerKind,
    label: str,
    rooms: list[str],
    *,
    clients: int,
    rate_hz: float,
    awareness_hz: float,
    duration_s: float,
) -> tuple[PhaseResult, dict[str, Any]]:
    p = ctx.params
    async with serving(ctx, kind, label, rooms) as server:
        specs = [
            {
                "role": "rooms",
                "rooms": part,
                "clients_per_room": clients,
                "rate_hz": rate_hz,
                "awareness_hz": awareness_hz,
                "duration_s": duration_s,
                "warmup_s": p.settle_s,
            }
            for part in _split(rooms, p.workers)
        ]
        workers = await workers_for(server, specs, label)
        (result,) = await run_phases(
            server.pid,
            workers,
            setup_timeout=600,
            phase_timeout=duration_s + 120,
            window_s=duration_s,
            profile=ctx.profile(kind, label),
        )
        unstored = await _log_pending(server) if kind.name == "blackboard" else None
    samples = result.merged_samples()
    sent = result.total("sent")
    delivered = len(samples)
    totals = {
        "latency": summary_ms(samples),
        "sent_per_s": round(sent / duration_s, 1),
        "delivery_ratio": round(delivered / (sent * (clients - 1)), 4) if sent else None,
        "closed": result.total("closed"),
        "connect_failures": result.total("connect_failures"),
        "connect_s": max(d.get("connect_s", 0) for d in result.data),
        "loadgen_share": round(result.total("loadgen_cpu_s") / result.wall_s * 100, 1),
        "unstored": unstored,
    }
    return result, totals


async def _log_pending(server: RunningServer) -> float:
    """Accepted updates not committed yet when the load generators have reported (their
    drain: 1 s after the window). The window's CPU share leaves out a log that lags
    (its acks wait for it), so say how far behind it still is."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as http:
        return (await scrape(http))["blackboard_log_pending_updates"]


async def relay(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    rooms = room_ids("relay", p.relay_rooms)
    result, t = await _rooms_scenario(
        ctx,
        kind,
        "relay",
        rooms,
        clients=2,
        rate_hz=p.relay_rate_hz,
        awareness_hz=0,
        duration_s=p.relay_s,
    )
    offered = round(p.relay_rooms * p.relay_rate_hz)
    return [
        Case(
            f"{p.relay_rooms} rooms x 2 clients, {offered:,} updates/s offered",
            {
                "updates/s in": t["sent_per_s"],
                "delivery p50 ms": t["latency"]["p50_ms"],
                "delivery p99 ms": t["latency"]["p99_ms"],
                "delivered %": _pct(t["delivery_ratio"]),
                "server CPU % of a core": round(result.cpu_share * 100, 1),
                "load generator CPU % of a core": t["loadgen_share"],
                "updates not yet stored 1 s after the window": t["unstored"],
            },
        )
    ]


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio * 100, 2)


async def spread(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    rooms = room_ids("spread", p.spread_rooms)
    result, t = await _rooms_scenario(
        ctx,
        kind,
        "spread",
        rooms,
        clients=p.spread_clients,
        rate_hz=p.spread_rate_hz,
        awareness_hz=p.awareness_hz,
        duration_s=p.spread_s,
    )
    return [
        Case(
            f"{p.spread_rooms:,} rooms x {p.spread_clients} clients, {p.spread_rate_hz:g} "
            f"updates/s per room, awareness {p.awareness_hz:g} Hz",
            {
                "delivery p50 ms": t["latency"]["p50_ms"],
                "delivery p99 ms": t["latency"]["p99_ms"],
                "delivered %": _pct(t["delivery_ratio"]),
                "server CPU % of a core": round(result.cpu_share * 100, 1),
                "server RSS MB": _mb(result.rss_end),
                "load generator CPU % of a core": t["loadgen_share"],
                "clients closed": t["closed"] + t["connect_failures"],
                "close codes": _codes(result),
                "updates not yet stored 1 s after the window": t["unstored"],
            },
        )
    ]


# --- 3. hot room -------------------------------------------------------------------------


def _hot_decision(phase: str, done: list[PhaseResult]) -> str:
    """Skip a step once the same mode was saturated with fewer observers."""
    mode = phase.split(":")[1]
    for result in done:
        if result.phase.split(":")[1] != mode:
            continue
        p99 = summary_ms(result.merged_samples())["p99_ms"]
        sent = result.total("sent")
        observers = result.total("observers")
        ratio = len(result.merged_samples()) / (sent * observers) if sent and observers else 0
        if p99 is None or p99 > SATURATED_P99_MS or ratio < SATURATED_DELIVERY:
            return "skip"
    return "go"


async def hot_room(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    rooms = room_ids("hot", 1)
    parts = max(1, min(p.workers, min(p.hot_steps)))
    async with serving(ctx, kind, "hot", rooms) as server:
        specs = [
            {
                "role": "hot_room",
                "rooms": rooms,
                "writer": i == 0,
                "rate_hz": p.hot_rate_hz,
                "duration_s": p.hot_s,
                "steps": list(p.hot_steps),
                "shares": [n // parts + (1 if i < n % parts else 0) for n in p.hot_steps],
                "awareness_modes": [False, True],
            }
            for i in range(parts)
        ]
        workers = await workers_for(server, specs, "hot")
        results = await run_phases(
            server.pid,
            workers,
            setup_timeout=600,
            phase_timeout=p.hot_s + 120,
            window_s=p.hot_s,
            profile=ctx.profile(kind, "hot"),
            decide=_hot_decision,
        )
    by_phase = {r.phase: r for r in results}
    cases = []
    for n in p.hot_steps:
        without = by_phase.get(f"{n}:updates")
        for mode in ("updates", "awareness"):
            result = by_phase.get(f"{n}:{mode}")
            name = f"{n:,} observers, {'with' if mode == 'awareness' else 'no'} awareness"
            if result is None:
                cases.append(Case(name, {"note": "skipped: saturated at a smaller crowd"}))
                continue
            samples = result.merged_samples()
            sent = result.total("sent")
            observers = result.total("observers")
            figures: dict[str, Any] = {
                # Per update delivered to an observer: a server that drops or stalls
                # deliveries does not look cheaper for it.
                "CPU µs per update per observer": round(result.cpu_s / len(samples) * 1e6, 2)
                if samples
                else None,
                "delivery p99 ms": summary_ms(samples)["p99_ms"],
                "delivered %": _pct(len(samples) / (sent * observers)) if sent else None,
                "server CPU % of a core": round(result.cpu_share * 100, 1),
                "load generator CPU % of a core": round(
                    result.total("loadgen_cpu_s") / result.wall_s * 100, 1
                ),
                "close codes": _codes(result),
            }
            if "writer_close_code" in result.data[0]:
                figures["writer closed with"] = str(result.data[0]["writer_close_code"])
            if mode == "awareness" and without is not None:
                extra = result.cpu_share - without.cpu_share
                figures["presence CPU % of a core"] = round(extra * 100, 1)
            cases.append(Case(name, figures))
    return cases


# --- 4. join storm -----------------------------------------------------------------------


async def join_storm(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    rooms = room_ids("storm", 1)
    async with serving(ctx, kind, "storm", rooms) as server:
        spec = {
            "role": "join_storm",
            "rooms": rooms,
            "doc_bytes": p.join_bytes,
            "joiners": p.join_clients,
            "modes": [0, p.join_ramp_hz],
        }
        workers = await workers_for(server, [spec], "storm")
        results = await run_phases(server.pid, workers, setup_timeout=600, phase_timeout=600)
    cases = []
    for result in results:
        data = result.data[0]
        rate = float(result.phase.split("=")[1])
        how = "at once" if rate == 0 else f"ramped at {rate:g}/s"
        cases.append(
            Case(
                f"{p.join_clients} joiners of a {data['doc_bytes'] / 1e6:.1f} MB document, {how}",
                {
                    "sync p50 ms": data["sync"]["p50_ms"],
                    "sync p99 ms": data["sync"]["p99_ms"],
                    "peak RSS MB": _mb(result.rss_peak),
                    "RSS before MB": _mb(result.rss_start),
                    "failed joins": data["failed"],
                },
            )
        )
    return cases


# --- 5. cold load ------------------------------------------------------------------------


def _size_label(size: int) -> str:
    return f"{size / 1e6:g} MB" if size >= 1_000_000 else f"{size / 1e3:g} KB"


async def _store_documents(data_dir: Path, docs: dict[str, tuple[int, int]]) -> None:
    """Each project: a document of `size` bytes compacted to a snapshot, then `tail`
    small updates left in the log after it."""
    store = make_store(None, data_dir)
    await store.open(migrate_schema=True)
    try:
        contents: dict[int, list[bytes]] = {}
        for project_id, (size, tail) in docs.items():
            updates = contents.setdefault(size, big_document_updates(size))
            await create_project(store, project_id, project_id, 1000.0, "USD", {}, "bench")
            await store.append([PendingAppend(project_id, u, "bench") for u in updates])
            await compact(store, project_id, timedelta(days=7))
            if tail:
                stream = UpdateStream(1, tail)
                rows = [PendingAppend(project_id, stream.stamped(i), "bench") for i in range(tail)]
                await store.append(rows)
    finally:
        await store.close()


async def cold_load(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    combos = [(size, tail) for size in p.cold_sizes for tail in p.cold_tails]
    names = {f"cold-{size}-{tail}": (size, tail) for size, tail in combos}
    if not kind.persistent:
        return [
            Case(
                f"{_size_label(size)}, snapshot + {tail:,} log rows",
                {"note": "n/a: run without persistence"},
            )
            for size, tail in combos
        ]

    async def prepare(data_dir: Path) -> None:
        await _store_documents(data_dir, names)

    async with serving(ctx, kind, "cold", [], prepare) as server:
        spec = {"role": "cold_join", "rooms": list(names)}
        workers = await workers_for(server, [spec], "cold")
        results = await run_phases(server.pid, workers, setup_timeout=120, phase_timeout=300)
    cases = []
    for result in results:
        size, tail = names[result.phase]
        data = result.data[0]
        cases.append(
            Case(
                f"{_size_label(size)}, snapshot + {tail:,} log rows",
                {
                    "first join (load) ms": data["first_ms"],
                    "second join ms": data["second_ms"],
                    "synced MB": round(data["doc_bytes"] / 1e6, 2),
                },
            )
        )
    return cases


# --- 6. soak -----------------------------------------------------------------------------


def _slope_mb_per_min(series: list[tuple[float, int]]) -> float | None:
    if len(series) < 3:
        return None
    n = len(series)
    mean_t = sum(t for t, _ in series) / n
    mean_r = sum(r for _, r in series) / n
    var = sum((t - mean_t) ** 2 for t, _ in series)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (r - mean_r) for t, r in series)
    return round(cov / var * 60 / MB, 2)


async def soak(ctx: Context, kind: ServerKind) -> list[Case]:
    p = ctx.params
    rooms = room_ids("soak", p.soak_rooms)
    async with serving(ctx, kind, "soak", rooms) as server:
        specs = [
            {
                "role": "soak",
                "rooms": part,
                "heartbeat_s": p.soak_heartbeat_s,
                "duration_s": p.soak_s,
                "settle_s": p.settle_s,
            }
            for part in _split(rooms, p.workers)
        ]
        workers = await workers_for(server, specs, "soak")
        (result,) = await run_phases(
            server.pid,
            workers,
            setup_timeout=900,
            phase_timeout=p.soak_s + 120,
            window_s=p.soak_s,
            profile=ctx.profile(kind, "soak"),
        )
    clients = result.total("clients") - result.total("connect_failures")
    return [
        Case(
            f"{p.soak_rooms:,} idle connections on {p.soak_rooms:,} documents, "
            f"heartbeat every {p.soak_heartbeat_s:g} s, {p.soak_s:g} s",
            {
                "connected": clients,
                "connect s": max(d.get("connect_s", 0) for d in result.data),
                "CPU µs per connection per s": round(
                    result.cpu_s / (clients * result.wall_s) * 1e6, 2
                )
                if clients
                else None,
                "RSS start MB": _mb(result.rss_start),
                "RSS end MB": _mb(result.rss_end),
                "RSS drift MB/min": _slope_mb_per_min(result.rss_series),
                "closed": result.total("closed"),
                "close codes": _codes(result),
            },
        )
    ]


# --- 7. one busy room -------------------------------------------------------------------


async def busy_room(ctx: Context, kind: ServerKind) -> list[Case]:
    """One room, one writer at each rate and its observers: the cost of each update when
    they arrive one at a time (no batching across rooms to hide behind)."""
    p = ctx.params
    cases = []
    for rate, observers in p.busy_cases:
        result, t = await _rooms_scenario(
            ctx,
            kind,
            f"busy-{rate:g}-{observers}",
            room_ids("busy", 1),
            clients=observers + 1,
            rate_hz=rate,
            awareness_hz=0,
            duration_s=p.busy_s,
        )
        delivered = len(result.merged_samples())
        cases.append(
            Case(
                f"1 writer at {rate:,.0f} updates/s, {observers} observers",
                {
                    "updates/s in": t["sent_per_s"],
                    "CPU µs per delivered update": round(result.cpu_s / delivered * 1e6, 1)
                    if delivered
                    else None,
                    "delivery p50 ms": t["latency"]["p50_ms"],
                    "delivery p99 ms": t["latency"]["p99_ms"],
                    "delivered %": _pct(t["delivery_ratio"]),
                    "server CPU % of a core": round(result.cpu_share * 100, 1),
                },
            )
        )
    return cases


# --- 8. no stalls ------------------------------------------------------------------------

STALL_PHASES = {
    "quiet": "nothing else",
    "load": "a client joins a cold {size} document",
    "join": "a fresh client joins that {size} document after a change",
    "compact": "a {size} document compacts",
}


async def no_stall(ctx: Context, kind: ServerKind) -> list[Case]:
    """A busy room's deliveries while another room loads or compacts a big document.
    Blackboard only: the peers keep documents in memory and never compact."""
    p = ctx.params
    size = _size_label(p.stall_bytes)
    names = {
        phase: f"busy room ({p.stall_rate_hz:g} updates/s, 2 observers) while {what}".format(
            size=size
        )
        for phase, what in STALL_PHASES.items()
    }
    if not kind.persistent:
        return [
            Case(name, {"note": "n/a: no persistence, no compaction"}) for name in names.values()
        ]
    busy, cold, compacting = "nostall-busy", "nostall-load", "nostall-compact"
    # One more row past the threshold compacts the second document.
    tail = Settings().compact_after_rows

    async def prepare(data_dir: Path) -> None:
        docs = {cold: (p.stall_bytes, 0), compacting: (p.stall_bytes, tail)}
        await _store_documents(data_dir, docs)

    async with serving(ctx, kind, "nostall", [busy], prepare) as server:
        shared = {
            "http_url": f"http://127.0.0.1:{server.port}",
            "window_s": p.stall_window_s,
            "warmup_s": p.settle_s,
        }
        busy_room = {
            "role": "no_stall",
            "rooms": [busy],
            "rate_hz": p.stall_rate_hz,
            "observers": 2,
            **shared,
        }
        # In a process of their own: receiving a 20 MB document holds a process's loop
        # for about 60 ms, which would show as the busy room's delay.
        events = {"role": "big_documents", "load_room": cold, "compact_room": compacting}
        workers = await workers_for(server, [busy_room, {**events, **shared}], "nostall")
        results = await run_phases(
            server.pid,
            workers,
            setup_timeout=600,
            phase_timeout=p.stall_window_s + 300,
            window_s=p.stall_window_s,
            profile=ctx.profile(kind, "nostall"),
        )
    cases = []
    for result in results:
        data, event = result.data
        cases.append(
            Case(
                names[result.phase],
                {
                    "delivery p50 ms": data["latency"]["p50_ms"],
                    "delivery p99 ms": data["latency"]["p99_ms"],
                    "delivery max ms": data["latency"]["max_ms"],
                    "longest gap ms": data["longest_gap_ms"],
                    "server loop: lags over 20 ms": data["server_stalls"],
                    "server loop: worst lag at most ms": data["server_worst_lag_ms"],
                    "delivered %": _pct(data["delivery_ratio"]),
                    "load / compaction ms": event["event_ms"],
                    "server CPU % of a core": round(result.cpu_share * 100, 1),
                },
            )
        )
    return cases


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    run: Callable[[Context, ServerKind], Awaitable[list[Case]]]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("echo", "1. Echo floor", echo),
    Scenario("relay", "Relay at 10k updates/s in (the relay goal)", relay),
    Scenario("spread", "2. Spread", spread),
    Scenario("hot_room", "3. Hot room", hot_room),
    Scenario("join_storm", "4. Join storm", join_storm),
    Scenario("cold_load", "5. Cold load", cold_load),
    Scenario("soak", "6. Soak", soak),
    Scenario("busy_room", "7. One busy room", busy_room),
    Scenario("no_stall", "8. No stalls: a busy room while another loads or compacts", no_stall),
)
