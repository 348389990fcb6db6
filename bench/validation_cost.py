"""What checking and repairing costs per update (DESIGN.md section 2), in this process.

    python -m bench.validation_cost            # about 30 s; prints a Markdown table
    python -m bench.validation_cost --write    # also puts it in bench/RESULTS.md

For documents of 0, 1,000 and 10,000 task entries it times, per small client update
(one task's status, as an agent sends it):

- `apply`: applying it to a Doc, the floor every server pays;
- `shadow check`: `ShadowValidator.check` (applying it to the shadow first), the price of
  never letting a malformed update touch the live document;
- `decode only`: `pycrdt.get_state(update)`, which catches undecodable bytes but not the
  updates that fail (or panic) half-way, for comparison;
- `rules`: `DocumentRules` observing the live apply and `review` reading the update's
  structs and checking what it touched (no repair needed): `status` (after the first
  round the agent's writes lose to a repair it never received), `retries` (each status
  write shows: a new attempt each round), `title` (a shot's title, no lattice field);
- `repair`: the same when the update breaks a rule (a status moved backwards; the agent
  receives each repair, as a connected one would), including the server write of the
  fix;

and, once per document: `shadow rebuild` (what a refused update costs: the shadow is
copied again from the live document) and `rules load` (indexing a loaded document).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from pycrdt import Doc, Map, get_state

from blackboard.sync.room.origin import SERVER_ACTOR, Origin, Source
from blackboard.sync.rules.correction import write_corrections
from blackboard.sync.rules.lattice import LatticeTracker
from blackboard.sync.rules.repair import DocumentRules
from blackboard.sync.rules.validation import ShadowValidator

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START = "<!-- validation-cost:start -->"
END = "<!-- validation-cost:end -->"
STATUSES = ("pending", "claimed", "running", "done")
CLIENT = Origin(Source.CLIENT, "bench")
ROUNDS = 5


def _document(entries: int) -> Doc:
    doc = Doc(client_id=1)
    tasks = doc.get("tasks", type=Map)
    with doc.transaction():
        for i in range(entries):
            tasks[f"T{i}"] = Map({"kind": "render", "status": "pending", "attempt": 1})
        tasks["bench"] = Map({"kind": "render", "status": "pending", "attempt": 1})
        doc.get("shots", type=Map)["S1"] = Map({"title": ""})
    return doc


def _updates(base: Doc, count: int, kind: str) -> list[bytes]:
    """`count` small updates from an agent, in order: task statuses moving forward
    (`status`; the agent never sees the server's repair when it starts again from
    `pending`, so from then on each of its writes loses to that repair), every other one
    moving back (`backwards`; the agent receives each repair, so most are repaired),
    forward with a new attempt each time it starts again (`retries`: every write shows),
    or shot titles (`title`)."""
    agent = Doc(client_id=2)
    agent.apply_update(base.get_update())
    out: list[bytes] = []
    subscription = agent.observe(lambda event: out.append(event.update))
    tasks = agent.get("tasks", type=Map)
    # A server like the one measured, whose repairs the agent receives (`backwards`).
    server = _live(base.get_update()) if kind == "backwards" else None
    serve = _reviewed(server) if server is not None else None
    for i in range(count):
        if server is not None and serve is not None and out:
            serve(out[-1])
            repairs = server.get_update(agent.get_state())
            agent.unobserve(subscription)
            agent.apply_update(repairs)
            subscription = agent.observe(lambda event: out.append(event.update))
        if kind == "title":
            agent.get("shots", type=Map)["S1"]["title"] = f"take {i}"
            continue
        step = i % len(STATUSES)
        if kind == "retries":
            with agent.transaction():
                if step == 0:
                    tasks["bench"]["attempt"] = 2 + i // len(STATUSES)
                tasks["bench"]["status"] = STATUSES[step]
            continue
        if kind == "backwards" and i % 2:
            step = 0
        tasks["bench"]["status"] = STATUSES[step]
    agent.unobserve(subscription)
    return out


def _best_us(updates: list[bytes], make_run: Callable[[], Callable[[bytes], object]]) -> float:
    """The least CPU time per update (this process only: the VM is shared) over ROUNDS
    runs, each on fresh state built by `make_run`."""
    best = float("inf")
    for _ in range(ROUNDS):
        run = make_run()
        started = time.process_time()
        for update in updates:
            run(update)
        best = min(best, (time.process_time() - started) / len(updates) * 1e6)
    return best


def _best_ms(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        run()
        best = min(best, (time.process_time() - started) * 1e3)
    return best


def measure(entries: int, count: int) -> dict[str, float]:
    base = _document(entries)
    state = base.get_update()
    workloads = {
        "rules (status)": _updates(base, count, "status"),
        "rules (retries)": _updates(base, count, "retries"),
        "rules (title)": _updates(base, count, "title"),
        "repair (status)": _updates(base, count, "backwards"),
    }
    forward = workloads["rules (status)"]
    figures = {"apply": _best_us(forward, lambda: _live(state).apply_update)}
    figures["shadow check"] = _best_us(forward, lambda: ShadowValidator(_live(state)).check)
    figures["decode only"] = _best_us(forward, lambda: get_state)
    for name, updates in workloads.items():
        figures[name] = _best_us(updates, lambda: _reviewed(_live(state))) - figures["apply"]
    figures["shadow rebuild ms"] = _best_ms(lambda: ShadowValidator(base))
    figures["rules load ms"] = _best_ms(lambda: LatticeTracker.of_document(base))
    figures["document KiB"] = len(state) / 1024
    return figures


def _live(state: bytes) -> Doc:
    """The server's Doc (the same client id each time: it writes the same repairs)."""
    doc = Doc(client_id=9)
    doc.apply_update(state)
    return doc


def _reviewed(live: Doc) -> Callable[[bytes], None]:
    """Apply as a client update, review, and write the repairs, as `Room` does."""
    rules = DocumentRules(live)

    def run(update: bytes) -> None:
        with live.transaction(origin=CLIENT):
            live.apply_update(update)
        corrections = rules.review(update, CLIENT)
        if corrections:
            with live.transaction(origin=Origin(Source.SERVER, SERVER_ACTOR)):
                write_corrections(corrections, live)

    return run


def table(sizes: list[int], count: int) -> list[str]:
    rows = {size: measure(size, count) for size in sizes}
    columns = list(next(iter(rows.values())))
    lines = [
        "| task entries | " + " | ".join(_heading(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for size, figures in rows.items():
        lines.append(f"| {size:,} | " + " | ".join(f"{figures[c]:.1f}" for c in columns) + " |")
    return lines


def _heading(column: str) -> str:
    return column if column.endswith(("ms", "KiB")) else f"{column} µs"


def section(lines: list[str], count: int) -> str:
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    machine += f", pycrdt {version('pycrdt')}"
    return "\n".join(
        [
            START,
            "## Validation cost",
            "",
            f"`python -m bench.validation_cost` ({machine}; CPU time of this process, the",
            f"best of {ROUNDS} runs of {count:,} updates, on a shared 2-core VM, so about",
            "±30 %). Microseconds per small client update, on top of `apply` (what",
            "applying it to a Doc costs anyway):",
            "",
            *lines,
            "",
            "- `shadow check`: the shadow Doc that every update is applied to first, so that",
            "  nothing malformed (an update that fails or panics half-way) touches the live",
            "  document: about the price of the apply itself. `decode only` is the cheaper",
            "  check that misses those.",
            "- `rules`: noticing what an update touched (type-level events) and checking",
            "  it; for a task status, also reading the update's structs for the lattice.",
            "  `status`: after the first round the agent's writes lose to a repair it never",
            "  received (a stale replica); `retries`: every status write shows (a new",
            "  attempt each round); `title`: a shot's title, no lattice field, so its structs",
            "  are not read. `repair`: about three updates in four move a status back and",
            "  are repaired (the agent receives each repair), so this includes writing the",
            "  fix. This is Python work, several times the apply; the shadow check is not.",
            "- `shadow rebuild`: paid once per refused update (the shadow may be half",
            "  modified, so it is copied again from the live document). `rules load`: paid",
            "  once per room load, in a worker thread before the room goes live (indexing",
            "  the document's statuses for the lattices; Python, so it takes the GIL).",
            END,
        ]
    )


def write(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START in current and END in current:
        before, rest = current.split(START, 1)
        after = rest.split(END, 1)[1]
        updated = before + text + after
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.validation_cost")
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    text = section(table([0, 1_000, 10_000], args.updates), args.updates)
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
