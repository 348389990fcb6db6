"""The "Peer comparison" section of bench/RESULTS.md: tables, ratios, goals.

Only the text between the two markers is rewritten, so the other benchmark sections of
the file (durable writes, validation cost, ...) stay as their authors left them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.scenarios import Case

START = "<!-- peer-comparison:start -->"
END = "<!-- peer-comparison:end -->"
HEADING = "## Peer comparison"
BASELINE = "blackboard"
FLOOR = "floor"  # no document at all: `bench/peers/bare_relay.py`

Outcome = list[Case] | str  # the cases, or why the scenario failed on that server


@dataclass
class RunRecord:
    mode: str  # "full" or "quick"
    machine: dict[str, str]
    versions: dict[str, str]
    durations: list[str]
    started: str
    elapsed_s: float = 0.0
    titles: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # scenario->server
    remeasured: dict[str, str] = field(default_factory=dict)  # scenario -> when (--merge)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = {
            key: {
                server: outcome if isinstance(outcome, str) else [asdict(c) for c in outcome]
                for server, outcome in by_server.items()
            }
            for key, by_server in self.outcomes.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        record = cls(**{**data, "outcomes": {}})
        for key, by_server in data["outcomes"].items():
            record.outcomes[key] = {
                server: outcome if isinstance(outcome, str) else [Case(**c) for c in outcome]
                for server, outcome in by_server.items()
            }
        return record


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    number = float(value)  # type: ignore[arg-type]
    if abs(number) >= 100:
        return f"{number:,.0f}"
    if abs(number) >= 1:
        return f"{number:.2f}".rstrip("0").rstrip(".")
    return f"{number:.3f}".rstrip("0").rstrip(".") or "0"


def _ratio(peer: object, base: object) -> str:
    if isinstance(peer, int | float) and isinstance(base, int | float) and base:
        ratio = peer / base
        return f" (x{ratio:,.0f})" if abs(ratio) >= 100 else f" (x{ratio:.2g})"
    return ""


def _cases(outcome: Outcome | None) -> dict[str, Case]:
    return {c.name: c for c in outcome} if isinstance(outcome, list) else {}


def scenario_table(servers: list[str], outcomes: dict[str, Outcome]) -> list[str]:
    names: list[str] = []
    metrics: dict[str, list[str]] = {}
    for server in servers:
        for case in _cases(outcomes.get(server)).values():
            if case.name not in names:
                names.append(case.name)
            keys = metrics.setdefault(case.name, [])
            keys.extend(k for k in case.figures if k not in keys)
    lines = [
        "| case | figure | " + " | ".join(servers) + " |",
        "|---|---|" + "---|" * len(servers),
    ]
    failures = {s: o for s, o in outcomes.items() if isinstance(o, str)}
    for name in names:
        for key in metrics[name]:
            base = _cases(outcomes.get(BASELINE)).get(name)
            base_value = base.figures.get(key) if base else None
            cells = []
            for server in servers:
                case = _cases(outcomes.get(server)).get(name)
                if server in failures:
                    cells.append("failed")
                    continue
                value = case.figures.get(key) if case else None
                ratio = _ratio(value, base_value) if server != BASELINE else ""
                cells.append(_fmt(value) + ratio)
            lines.append(f"| {name} | {key} | " + " | ".join(cells) + " |")
    for server, reason in failures.items():
        lines.append("")
        lines.append(f"{server} failed: `{reason.splitlines()[0][:300]}`")
    return lines


# --- goals ------------------------------------------------------------------------------


def _figure(
    record: RunRecord, scenario: str, case_prefix: str, key: str, server: str = BASELINE
) -> object:
    for case in _cases(record.outcomes.get(scenario, {}).get(server)).values():
        if case.name.startswith(case_prefix):
            return case.figures.get(key)
    return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _floor(record: RunRecord, scenario: str, case_prefix: str, said: dict[str, str]) -> str:
    """The bare relay's figures of the same case (`bench/peers/bare_relay.py`), if it
    ran: what the sockets alone allow on this machine. `said`: each figure's key and how
    to say it, "{}" standing for the value."""
    values = {key: _figure(record, scenario, case_prefix, key, FLOOR) for key in said}
    if all(value is None for value in values.values()):
        return ""
    return "; the floor (a bare relay): " + ", ".join(
        text.format(_fmt(values[key])) for key, text in said.items()
    )


def goals(record: RunRecord) -> list[tuple[str, str, str]]:
    """(goal, verdict, Blackboard's figure) for each goal of the issue."""
    rows = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    rate = _number(_figure(record, "relay", "", "updates/s in"))
    p50 = _number(_figure(record, "relay", "", "delivery p50 ms"))
    p99 = _number(_figure(record, "relay", "", "delivery p99 ms"))
    ok = None
    if rate is not None and p50 is not None and p99 is not None and rate >= 9_500:
        ok = p50 < 0.5 and p99 < 3
    rows.append(
        (
            "relay p50 < 0.5 ms and p99 < 3 ms at 10k updates/s in",
            verdict(ok),
            f"{_fmt(rate)} updates/s in: p50 {_fmt(p50)} ms, p99 {_fmt(p99)} ms"
            + _floor(
                record,
                "relay",
                "",
                {"delivery p50 ms": "p50 {} ms", "delivery p99 ms": "p99 {} ms"},
            ),
        )
    )
    crowd = "1,500 observers, no awareness"
    cost = _number(_figure(record, "hot_room", crowd, "CPU µs per update per observer"))
    delivered = _number(_figure(record, "hot_room", crowd, "delivered %"))
    ok = None
    if cost is not None and delivered is not None:
        ok = cost <= 10 and delivered >= 99  # a server that stalls does not get the credit
    rows.append(
        (
            "<= 10 µs CPU per update per observer (y/hub: 14.4 µs at 1,500)",
            verdict(ok),
            f"{_fmt(cost)} µs per delivered update, {_fmt(delivered)}% delivered ({crowd})"
            + _floor(record, "hot_room", crowd, {"CPU µs per update per observer": "{} µs"}),
        )
    )
    presence = _number(
        _figure(record, "hot_room", "500 observers, with awareness", "presence CPU % of a core")
    )
    rows.append(
        (
            "presence at 1 Hz for 500 users in one room < 30% of a core (y/hub: 103%)",
            verdict(presence < 30 if presence is not None else None),
            f"{_fmt(presence)}% of a core for presence (with minus without awareness)",
        )
    )
    storm = _number(_figure(record, "join_storm", "150 joiners of a 4", "sync p99 ms"))
    rows.append(
        (
            "150 joiners of a 4 MB document: sync p99 < 1 s (y/hub: 6.6 s)",
            verdict(storm < 1000 if storm is not None else None),
            f"p99 {_fmt(storm)} ms",
        )
    )
    busy = "CPU µs per delivered update"
    ratios = {
        rate: (
            _number(_figure(record, "busy_room", f"1 writer at {rate} ", busy)),
            _number(_figure(record, "busy_room", f"1 writer at {rate} ", busy, "y-websocket")),
        )
        for rate in ("1,000", "2,000")
    }
    measured = {rate: (ours, theirs) for rate, (ours, theirs) in ratios.items() if ours and theirs}
    rows.append(
        (
            "one busy room (1 writer, 2 observers): CPU per delivered update <= 2x y-websocket's",
            verdict(
                all(ours <= 2 * theirs for ours, theirs in measured.values())
                if len(measured) == len(ratios)
                else None
            ),
            "; ".join(
                f"{rate}/s: {_fmt(ours)} µs, {ours / theirs:.2g}x y-websocket's"
                for rate, (ours, theirs) in measured.items()
            )
            or "-",
        )
    )
    # Which phase a case is, by its name (`scenarios.STALL_PHASES`), as this row says it.
    while_ = {
        "a cold": "loads",
        "after a change": "is joined after a change",
        "compacts": "compacts",
    }
    stalls = {
        said: case.figures
        for case in _cases(record.outcomes.get("no_stall", {}).get(BASELINE)).values()
        for phrase, said in while_.items()
        if phrase in case.name
    }
    p99s = {said: _number(figures.get("delivery p99 ms")) for said, figures in stalls.items()}
    rows.append(
        (
            "no stalls: a busy room's delivery p99 < 20 ms while another room loads, is "
            "joined after a change or compacts a big document",
            verdict(
                all(p99 is not None and p99 < 20 for p99 in p99s.values())
                if len(p99s) == len(while_)
                else None
            ),
            "; ".join(
                f"while one {said}: p99 {_fmt(p99s[said])} ms, "
                f"longest gap {_fmt(figures.get('longest gap ms'))} ms"
                for said, figures in stalls.items()
            )
            or "-",
        )
    )
    start = _number(_figure(record, "soak", "", "RSS start MB"))
    end = _number(_figure(record, "soak", "", "RSS end MB"))
    slope = _figure(record, "soak", "", "RSS drift MB/min")
    rows.append(
        (
            "no RSS drift in the soak (RSS at the end within 2% of the start)",
            verdict(end <= start * 1.02 if start and end is not None else None),
            f"{_fmt(start)} -> {_fmt(end)} MB, slope {_fmt(slope)} MB/min",
        )
    )
    return rows


# --- the section ------------------------------------------------------------------------


def render(record: RunRecord, servers: list[str]) -> str:
    m = record.machine
    lines = [
        START,
        "",
        f"Generated by `python -m bench{' --quick' if record.mode == 'quick' else ''}` on "
        f"{record.started} ({record.mode} run, {record.elapsed_s / 60:.1f} min).",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram']} RAM, {m['kernel']}; "
        f"Python {m['python']}, Node {m['node']}.",
        "",
        "Servers (each started fresh per scenario on 127.0.0.1, documents in memory except "
        "Blackboard, which runs `blackboard serve` on its embedded SQLite default):",
        "",
        *[f"- {name}: {version}" for name, version in record.versions.items()],
        "",
        "Durations and sizes used: " + "; ".join(record.durations) + ".",
        "",
        "Caveat: the load generator (Python, raw y-websocket frames over `websockets`, "
        "separate processes) shares the same cores with the server under test, so "
        "latencies include load-generator queueing; figures are comparable between servers "
        "of the same run, not absolute limits. `(xN)` after a peer's figure is the peer's "
        "value divided by Blackboard's: for latency, CPU and memory below 1 means the peer "
        "is ahead; for rates and delivery, above 1.",
        "",
        "### Goals (Blackboard)",
        "",
        "| goal | verdict | measured |",
        "|---|---|---|",
        *[f"| {g} | {v} | {f} |" for g, v, f in goals(record)],
        "",
    ]
    for key, title in record.titles.items():
        lines += [f"### {title}", ""]
        if key in record.remeasured:
            lines += [f"Re-measured on {record.remeasured[key]} (`--merge`).", ""]
        lines += scenario_table(servers, record.outcomes.get(key, {}))
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the text between the markers (or append the section) in `path`."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if START in text and END in text:
        before = text[: text.index(START)]
        after = text[text.index(END) + len(END) :]
        text = before + section + after
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{section}\n"
    path.write_text(text)
