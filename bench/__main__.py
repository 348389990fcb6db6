"""`python -m bench`: every scenario against Blackboard and its peers, into RESULTS.md.

    python -m bench                      # the full run (about 25 minutes, see RESULTS.md)
    python -m bench --quick              # a smoke run of seconds per scenario
    python -m bench --servers blackboard,hocuspocus --scenarios echo,hot_room
    python -m bench --soak-s 1800        # the 30-minute soak
    python -m bench --profile prof/      # and py-spy Blackboard during each phase
    python -m bench --scenarios hot_room --merge   # re-measure one, keep the others

Each scenario starts each server fresh on a free loopback port, drives it from separate
load generator processes (`bench.loadgen`), and reads the server's CPU and RSS from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import machine
from bench.report import RunRecord, render, write_section
from bench.scenarios import FULL, QUICK, SCENARIOS, Context, Params
from bench.servers import SERVERS
from blackboard.web.open_files import raise_open_files

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
RECORD_NAME = "peer-comparison.json"  # the figures behind the section, for --merge


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds per scenario")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma list of {', '.join(SERVERS)}"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help=f"comma list of {', '.join(s.key for s in SCENARIOS)}",
    )
    parser.add_argument("--soak-s", type=float, help="soak duration in seconds (full run: 45)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="RESULTS.md to update")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="re-measure only the chosen scenarios, keeping the others of the last run "
        f"(from {RECORD_NAME} next to --output)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy Blackboard's measured phases into this folder"
    )
    return parser


def _pick(raw: str, known: list[str], what: str) -> list[str]:
    chosen = [x.strip() for x in raw.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in known]
    if unknown or not chosen:
        raise SystemExit(
            f"unknown {what}: {', '.join(unknown) or raw!r}; known: {', '.join(known)}"
        )
    return chosen


def _durations(p: Params, scenarios: list[str]) -> list[str]:
    described = {
        "echo": f"echo {p.echo_s:g} s",
        "relay": f"relay {p.relay_rooms} rooms x {p.relay_rate_hz:g}/s for {p.relay_s:g} s",
        "spread": f"spread {p.spread_rooms:,} rooms for {p.spread_s:g} s",
        "hot_room": f"hot room {'/'.join(map(str, p.hot_steps))} observers, {p.hot_s:g} s a step",
        "join_storm": f"join storm {p.join_clients} joiners of {p.join_bytes / 1e6:g} MB",
        "cold_load": "cold load "
        + "/".join(f"{s / 1e6:g} MB" for s in p.cold_sizes)
        + " x "
        + "/".join(map(str, p.cold_tails))
        + " rows",
        "soak": f"soak {p.soak_rooms:,} connections for {p.soak_s:g} s",
        "busy_room": "busy room "
        + ", ".join(f"{r:g} updates/s to {n} observers" for r, n in p.busy_cases)
        + f", {p.busy_s:g} s each",
        "no_stall": f"no stall {p.stall_rate_hz:g} updates/s, {p.stall_bytes / 1e6:g} MB"
        f" documents, {p.stall_window_s:g} s windows",
    }
    return [described[s] for s in scenarios] + [f"{p.workers} load generator process(es)"]


async def run(args: argparse.Namespace) -> int:
    servers = _pick(args.servers, list(SERVERS), "servers")
    keys = _pick(args.scenarios, [s.key for s in SCENARIOS], "scenarios")
    params = QUICK if args.quick else FULL
    if args.soak_s is not None:
        params = dataclasses.replace(params, soak_s=args.soak_s)
    limit = raise_open_files()
    print(f"open files limit: {limit}", file=sys.stderr)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    record = RunRecord(
        mode="quick" if args.quick else "full",
        machine=machine.describe(),
        versions={name: SERVERS[name].version() for name in servers},
        durations=_durations(params, keys),
        started=now,
    )
    # Made now, not found missing after a run of many minutes.
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record_path = args.output.with_name(RECORD_NAME)
    if args.merge:
        record = _merge_into(record_path, record)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    ctx = Context(params, work, profile_dir=args.profile)
    failed = 0
    for scenario in (s for s in SCENARIOS if s.key in keys):
        outcomes = record.outcomes.setdefault(scenario.key, {})
        if args.merge:
            record.remeasured[scenario.key] = now
        for name in servers:
            print(f"[{time.monotonic() - started:6.0f}s] {scenario.key} on {name}", file=sys.stderr)
            try:
                outcomes[name] = await scenario.run(ctx, SERVERS[name])
            except Exception as exc:
                # A peer that fails is a finding, recorded in the table; Blackboard failing
                # fails the run.
                failed += name == "blackboard"
                traceback.print_exc()
                outcomes[name] = f"{type(exc).__name__}: {exc}"
    if not args.merge:
        record.elapsed_s = time.monotonic() - started
    record.titles = {s.key: s.title for s in SCENARIOS if s.key in record.outcomes}
    shown = [name for name in SERVERS if name in record.versions]
    write_section(args.output, render(record, shown))
    record_path.write_text(json.dumps(record.to_json(), indent=1, ensure_ascii=False) + "\n")
    print(
        f"wrote {args.output} in {time.monotonic() - started:.0f}s; work dir {work}",
        file=sys.stderr,
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def _merge_into(path: Path, fresh: RunRecord) -> RunRecord:
    """The last run's record, to which this run's scenarios will be written."""
    if not path.exists():
        raise SystemExit(f"--merge needs {path}, written by an earlier run")
    record = RunRecord.from_json(json.loads(path.read_text()))
    if record.mode != fresh.mode:
        raise SystemExit(f"--merge: the last run was a {record.mode} run, this one is not")
    record.versions.update(fresh.versions)
    return record


def main() -> None:
    sys.exit(asyncio.run(run(_parser().parse_args())))


if __name__ == "__main__":
    main()
