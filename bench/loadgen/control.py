"""The line protocol between the runner and a load generator process.

The generator prints JSON lines on stdout: `{"event": "ready", "phase": P}` when set up
for phase P, then waits for the runner's `go` (or `stop`) line on stdin, so the runner
can read the server's CPU counters right before and after; `{"event": "done", "phase":
P, "data": {...}}` when P is over; `{"event": "finished"}` at the end. The runner may
answer `skip` instead of `go`: the phase is not run (e.g. a saturated hot-room step).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

GO, SKIP = "go", "skip"


class Control:
    def __init__(self) -> None:
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._cpu_at_go = time.process_time()
        # stdin is read in a daemon thread: the runner writes a line per phase, nothing more.
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_stdin, args=(loop,), daemon=True).start()

    def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(self._lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(self._lines.put_nowait, SKIP)  # the runner went away

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    async def ready(self, phase: str) -> bool:
        """Announce `phase`; True if the runner says go, False if it says skip."""
        self.emit("ready", phase=phase)
        go = await self._lines.get() == GO
        self._cpu_at_go = time.process_time()
        return go

    def done(self, phase: str, data: dict[str, Any]) -> None:
        """Report `phase`, with this process's own CPU time since `go` (load generator
        saturation shows up there: near one core means the clients, not the server,
        set the pace)."""
        data = {**data, "loadgen_cpu_s": round(time.process_time() - self._cpu_at_go, 3)}
        self.emit("done", phase=phase, data=data)
