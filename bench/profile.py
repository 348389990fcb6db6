"""`--profile DIR`: sample Blackboard with py-spy during each measured phase.

py-spy (in the `peers` extra, which `make` installs) records the server's stacks while it
holds the GIL, in collapsed form (`DIR/<scenario>-<phase>.txt`); `summary` reads one back as
the functions that hold the most samples, inclusive and by own time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

RATE_HZ = 250


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install -e .[peers]")
    return found


async def record(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    """Start sampling `pid` for `seconds` into `out`; await `.wait()` on the result."""
    return await asyncio.create_subprocess_exec(
        py_spy(),
        *("record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))),
        *("--rate", str(RATE_HZ), "--gil", "--format", "raw", "--output", str(out)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _frame(text: str) -> str:
    """`name (path/file.py:123)` -> `name file.py`."""
    match = re.match(r"(.*?) \((?:.*/)?([^/:]+)(?::\d+)?\)$", text)
    return f"{match[1]} {match[2]}" if match else text


def summary(raw: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        total += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        own[frames[-1]] += int(count)
    if not total:
        return "no samples"
    lines = [f"{total} samples while holding the GIL", "inclusive (without the frames in all):"]
    shared = [name for name, n in inclusive.items() if n == total]  # runner, serve, loop
    for name in shared:
        del inclusive[name]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    lines.append("own time:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)
