"""A server process's CPU time and memory, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def tree_cpu_times(pid: int) -> dict[int, tuple[float, float]]:
    """`cpu_times` of `pid` and of every live process below it: a server's worker
    processes (Blackboard's DocWorker child: compaction, big loads) do its work too."""
    times: dict[int, tuple[float, float]] = {}
    todo = [pid]
    while todo:
        process = todo.pop()
        try:
            times[process] = cpu_times(process)
            for task in Path(f"/proc/{process}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
            continue
    return times


def cpu_between(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> tuple[float, float]:
    """(user, system) seconds spent between two `tree_cpu_times` readings by the processes
    alive at the second (one that exited in between is not counted)."""
    user = system = 0.0
    for process, (user1, system1) in after.items():
        user0, system0 = before.get(process, (0.0, 0.0))
        user += user1 - user0
        system += system1 - system0
    return user, system


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    user, system = cpu_times(pid)
    return user + system


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
