"""A real Blackboard server in its own process (uvicorn on a free loopback port).

Every step that waits (start, stop, kill) is async, so a test's event loop keeps running
while the server comes up or goes down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_LINE = "stopped: every accepted update is committed"
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("BLACKBOARD_LOG_LEVEL", "info")
        self.log_path = data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> ServerProcess:
        """Spawn the server and wait until `/healthz` answers 200."""
        self.proc = await asyncio.to_thread(self._spawn)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(base_url=self.http, timeout=1) as http:
            while loop.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(POLL_S)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.logs()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "blackboard.web.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait; raise unless the server shut down cleanly (flushed)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, timeout)
        # uvicorn re-raises the signal it handled once shutdown is complete.
        if code not in (0, -signal.SIGTERM) or SHUTDOWN_LINE not in self.logs():
            raise RuntimeError(f"unclean shutdown ({code}):\n{self.logs()}")

    async def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        assert self.proc is not None
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait, 10)

    async def restart(self) -> ServerProcess:
        return await self.start()

    async def close(self) -> None:
        """Kill the server if it still runs (fixture teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            await self.kill()


# The `start_server` fixture: `await start_server(env={...}, data_dir=...)`.
StartServer = Callable[..., Awaitable[ServerProcess]]
