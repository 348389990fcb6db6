"""`python -m bench --quick` end to end, on a small subset: real servers (Blackboard and
Hocuspocus, whose framing differs), real load generator processes, a RESULTS-style file
whose other sections are left alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench import procstat
from tests.support.server import ROOT

OTHER_SECTION = "## Durable writes\n\nkeep me: 1,234 rows/s\n"


def test_quick_run_writes_the_peer_comparison(tmp_path: Path) -> None:
    peers = ROOT / "bench" / "peers" / "node_modules" / "@hocuspocus" / "server"
    assert peers.exists(), "bench/peers/node_modules is missing: run `make bench` or `make test`"
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\n{OTHER_SECTION}")
    _bench(results, "--servers", "blackboard,hocuspocus", "--scenarios", "echo,hot_room,cold_load")
    text = results.read_text()
    assert OTHER_SECTION in text  # another helper's section is untouched
    section = text[text.index("<!-- peer-comparison:start -->") :]
    assert section.rstrip().endswith("<!-- peer-comparison:end -->")
    assert "Machine: " in section and "@hocuspocus/server" in section
    assert "| case | figure | blackboard | hocuspocus |" in section

    def row(case: str, figure: str) -> list[str]:
        return _row(section, case, figure)

    number = re.compile(r"^[\d,.]+( \(x[\d.e+-]+\))?$")
    bb, hp = row("1 room, 2 clients, ping-pong", "round trips/s")
    assert number.match(bb) and number.match(hp), (bb, hp)
    assert float(bb.replace(",", "")) > 0
    for mode in ("no", "with"):
        bb, hp = row(f"20 observers, {mode} awareness", "CPU µs per update per observer")
        assert number.match(bb) and number.match(hp), (bb, hp)
        bb, hp = row(f"20 observers, {mode} awareness", "delivered %")
        assert bb == "100" and hp.startswith("100"), (bb, hp)
    bb, hp = row("100 KB, snapshot + 1 log rows", "first join (load) ms")
    assert number.match(bb) and hp == "-"
    assert "n/a: run without persistence" in section
    assert "### Goals (Blackboard)" in section
    assert (tmp_path / "peer-comparison.json").exists()  # the figures, for --merge
    # Re-measuring one scenario keeps the others and rewrites the one section.
    _bench(results, "--servers", "blackboard", "--scenarios", "echo", "--merge")
    text = results.read_text()
    assert text.count("<!-- peer-comparison:start -->") == 1
    assert OTHER_SECTION in text
    merged = text[text.index("<!-- peer-comparison:start -->") :]
    assert "| case | figure | blackboard | hocuspocus |" in merged
    kept = ("20 observers, no awareness", "CPU µs per update per observer")
    assert _row(merged, *kept) == row(*kept)  # the hot room figures of the first run
    echo_at = merged.index("### 1. Echo floor")
    assert "Re-measured on " in merged[echo_at : merged.index("### 3. Hot room")]


def _bench(results: Path, *args: str) -> None:
    """`python -m bench --quick ARGS --output results`, which must succeed."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--output", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stderr[-3000:]


def _row(section: str, case: str, figure: str) -> list[str]:
    (line,) = [line for line in section.splitlines() if line.startswith(f"| {case} | {figure} |")]
    return [cell.strip() for cell in line.strip("|").split("|")][2:]


def test_quick_busy_room_and_no_stall(tmp_path: Path) -> None:
    """The two per-update scenarios: a busy room beside y-websocket, and a busy room's
    deliveries while another room loads, is joined after a change and compacts
    (Blackboard only), with goals."""
    results = tmp_path / "RESULTS.md"
    _bench(results, "--servers", "blackboard,y-websocket", "--scenarios", "busy_room,no_stall")
    section = results.read_text()
    number = re.compile(r"^[\d,.]+( \(x[\d.e+-]+\))?$")
    for rate, observers in (("1,000", 2), ("2,000", 2), ("200", 50)):
        case = f"1 writer at {rate} updates/s, {observers} observers"
        bb, yws = _row(section, case, "CPU µs per delivered update")
        assert number.match(bb) and number.match(yws), (bb, yws)
        assert _row(section, case, "delivered %")[0] == "100"
    busy = "busy room (500 updates/s, 2 observers) while "
    for event in (
        "nothing else",
        "a client joins a cold 2 MB document",
        "a fresh client joins that 2 MB document after a change",
    ):
        bb, yws = _row(section, busy + event, "delivery p99 ms")
        assert number.match(bb) and yws == "-", (bb, yws)
    compaction_ms, _ = _row(section, busy + "a 2 MB document compacts", "load / compaction ms")
    assert number.match(compaction_ms), "the compaction ran inside its window"
    goals = [line for line in section.splitlines() if line.startswith("| one busy room")]
    goals += [line for line in section.splitlines() if line.startswith("| no stalls")]
    assert len(goals) == 2 and all("not measured" not in line for line in goals), goals


def test_the_floor_relays_every_update_and_goals_show_it(tmp_path: Path) -> None:
    """The bare relay (`bench/peers/bare_relay.py`) answers the load generator's
    handshake, relays every update to every other socket of the room, and its figures
    sit beside Blackboard's in the goal row they bound."""
    results = tmp_path / "RESULTS.md"
    _bench(results, "--servers", "blackboard,floor", "--scenarios", "relay,hot_room")
    section = results.read_text()
    assert "| case | figure | blackboard | floor |" in section
    relay = "10 rooms x 2 clients, 200 updates/s offered"
    assert _row(section, relay, "delivered %") == ["100", "100 (x1)"]
    for mode in ("no", "with"):
        _, floor = _row(section, f"20 observers, {mode} awareness", "delivered %")
        assert floor == "100 (x1)", floor
    # The relay's goal row bounds any relay case; the hot room's is of 1,500 observers,
    # more than a quick run has.
    (goal,) = [line for line in section.splitlines() if line.startswith("| relay")]
    assert re.search(r"the floor \(a bare relay\): p50 [\d.]+ ms, p99 [\d.]+ ms", goal), goal


def test_a_servers_cpu_counts_its_child_processes() -> None:
    """Blackboard compacts and loads big documents in a child process: its CPU is the
    server's too, in every scenario's "server CPU"."""
    burn = (
        "import sys, time\nend = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\nsys.stdin.read()"
    )
    before = procstat.tree_cpu_times(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while sum(procstat.cpu_times(child.pid)) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = procstat.tree_cpu_times(os.getpid())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    user, system = procstat.cpu_between(before, after)
    assert child.pid in after and user + system >= 0.3


def test_snapshot_stall_measures_both_backends() -> None:
    """`python -m bench.snapshot_stall`, small: a row of save and read figures for each
    backend, with a state big enough for Postgres to move it in pieces."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.snapshot_stall", "--mb", "2.5", "--rounds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    figures = r"\d+ / [\d.]+, \d+ / [\d.]+"
    for backend in ("sqlite", "postgres"):
        assert re.search(rf"^\| {backend} \| {figures} \| {figures} \|$", out, re.M), out
