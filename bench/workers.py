"""Load generator processes as seen from the runner, and the phase loop around them.

For each phase every worker announces `ready`; the runner then reads the server's CPU
time, says `go`, samples its RSS until every worker is `done`, and reads the CPU time
again. CPU is therefore measured over exactly the phase, with all clients connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench import profile as bench_profile
from bench.servers import ROOT

STREAM_LIMIT = 256 * 1024 * 1024  # a phase's samples travel as one JSON line
RSS_SAMPLE_S = 0.2


class WorkerFailed(RuntimeError):
    pass


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    async def start(cls, spec: dict[str, Any], log_path: Path) -> Worker:
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "bench.loadgen", json.dumps(spec)),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=STREAM_LIMIT,
            )
        return cls(proc, log_path)

    async def event(self, timeout: float) -> dict[str, Any]:
        """The next JSON event this worker prints."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise WorkerFailed(f"load generator exited:\n{tail}")
            with contextlib.suppress(ValueError):
                return json.loads(line)

    async def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{word}\n".encode())
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class PhaseResult:
    phase: str
    wall_s: float
    cpu_s: float
    system_s: float  # the kernel's part of cpu_s (socket writes and reads)
    rss_start: int
    rss_end: int
    rss_peak: int
    rss_series: list[tuple[float, int]] = field(repr=False)
    data: list[dict[str, Any]]  # one per worker

    @property
    def cpu_share(self) -> float:
        """Server CPU as a fraction of one core over the phase."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0

    def merged_samples(self) -> list[int]:
        return [s for d in self.data for s in d.get("samples_ns", [])]

    def total(self, key: str) -> float:
        return sum(d.get(key) or 0 for d in self.data)


async def _sample_rss(pid: int, series: list[tuple[float, int]], started: float) -> None:
    while True:
        with contextlib.suppress(OSError):
            series.append((time.monotonic() - started, procstat.rss_bytes(pid)))
        await asyncio.sleep(RSS_SAMPLE_S)


async def run_phases(
    server_pid: int,
    workers: list[Worker],
    *,
    setup_timeout: float,
    phase_timeout: float,
    window_s: float | None = None,
    profile: Path | None = None,
    decide: Callable[[str, list[PhaseResult]], str] = lambda phase, done: "go",
) -> list[PhaseResult]:
    """Drive every worker through its phases; `decide` may answer "skip" to a phase.

    With `window_s`, CPU is read over exactly that long after `go` (the workers' own
    measuring window), not over the drain that follows it; with `profile` too, py-spy
    samples the server over that window into `<profile>-<phase>.txt` (and `.summary`).
    """
    results: list[PhaseResult] = []
    try:
        while True:
            events = [await w.event(setup_timeout) for w in workers]
            while any(e["event"] == "connected" for e in events):  # informational
                events = [
                    await w.event(setup_timeout) if e["event"] == "connected" else e
                    for w, e in zip(workers, events, strict=True)
                ]
            if all(e["event"] == "finished" for e in events):
                return results
            if not all(e["event"] == "ready" for e in events):
                raise WorkerFailed(f"workers out of step: {events}")
            phase = events[0]["phase"]
            if decide(phase, results) != "go":
                for w in workers:
                    await w.say("skip")
                continue
            procstat.reset_peak_rss(server_pid)
            cpu0, rss0, t0 = (
                procstat.tree_cpu_times(server_pid),
                procstat.rss_bytes(server_pid),
                time.monotonic(),
            )
            series: list[tuple[float, int]] = []
            sampler = asyncio.create_task(_sample_rss(server_pid, series, t0))
            spy, raw = None, None
            if profile is not None and window_s is not None:
                raw = (
                    profile.parent / f"{profile.name}-{re.sub(r'[^A-Za-z0-9=.-]', '_', phase)}.txt"
                )
                spy = await bench_profile.record(server_pid, window_s, raw)
            for w in workers:
                await w.say("go")
            if window_s is not None:
                await asyncio.sleep(window_s)
                cpu1, t1 = procstat.tree_cpu_times(server_pid), time.monotonic()
            done = [await w.event(phase_timeout) for w in workers]
            if window_s is None:
                cpu1, t1 = procstat.tree_cpu_times(server_pid), time.monotonic()
            sampler.cancel()
            if spy is not None and raw is not None:
                await asyncio.wait_for(spy.wait(), 60)
                if raw.exists():
                    raw.with_suffix(".summary").write_text(bench_profile.summary(raw))
            rss1 = procstat.rss_bytes(server_pid)
            user, system = procstat.cpu_between(cpu0, cpu1)
            result = PhaseResult(
                phase=phase,
                wall_s=t1 - t0,
                cpu_s=user + system,
                system_s=system,
                rss_start=rss0,
                rss_end=rss1,
                rss_peak=max(procstat.peak_rss_bytes(server_pid), rss1),
                rss_series=series,
                data=[d.get("data", {}) for d in done],
            )
            results.append(result)
    finally:
        for w in workers:
            await w.close()
