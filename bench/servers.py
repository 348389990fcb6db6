"""The servers under test, each started fresh per scenario on a free loopback port.

Blackboard is a real `blackboard serve` process on the embedded default (SQLite in a
temporary data dir); the peers are the reference `@y/websocket-server`, Hocuspocus and
pycrdt-websocket's own server, all keeping documents in memory; and `floor`, a bare relay
of frames with no document at all (what the sockets alone cost a Python server here).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from blackboard.persistence.factory import make_store
from blackboard.sync.projects.creation import create_project

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# Blackboard's per-connection rate limit (500 messages/s) would close the echo and relay
# writers, and its per-address cap (1,000 sockets) the 10,000 clients that all come from
# loopback; the peers have neither, so the benchmark lifts both.
BLACKBOARD_ENV = {
    "BLACKBOARD_LOG_LEVEL": "warning",
    "BLACKBOARD_RATE_LIMIT": "1000000000",
    "BLACKBOARD_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "BLACKBOARD_CONNECTION_RATE_PER_ADDRESS": "0",  # thousands of clients join from here
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServerKind:
    name: str
    framing: str  # "plain" or "hocuspocus"
    persistent: bool  # documents survive a restart (cold load is measurable)

    def command(self, port: int, data_dir: Path) -> list[str]:
        raise NotImplementedError

    def url_template(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}/{{room}}"

    def env(self) -> dict[str, str]:
        return {}

    async def prepare(self, data_dir: Path, rooms: Iterable[str]) -> None:
        """Make `rooms` joinable before the server starts (peers create them on join)."""

    def version(self) -> str:
        raise NotImplementedError


def _npm_version(package: str) -> str:
    manifest = PEERS / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text())["version"]


class Blackboard(ServerKind):
    def command(self, port: int, data_dir: Path) -> list[str]:
        return [
            sys.executable,
            *("-m", "blackboard.web.cli", "serve"),
            *("--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)),
        ]

    def url_template(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}/sync/{{room}}"

    def env(self) -> dict[str, str]:
        return BLACKBOARD_ENV

    async def prepare(self, data_dir: Path, rooms: Iterable[str]) -> None:
        store = make_store(None, data_dir)
        await store.open(migrate_schema=True)
        try:
            for room in rooms:
                await create_project(store, room, room, 1000.0, "USD", {}, actor="bench")
        finally:
            await store.close()

    def version(self) -> str:
        return f"blackboard {version('blackboard')} (pycrdt {version('pycrdt')}, SQLite)"


class YWebsocketServer(ServerKind):
    def command(self, port: int, data_dir: Path) -> list[str]:
        return ["node", str(PEERS / "y_websocket_server.mjs"), str(port)]

    def version(self) -> str:
        return (
            f"@y/websocket-server {_npm_version('@y/websocket-server')} (yjs {_npm_version('yjs')})"
        )


class Hocuspocus(ServerKind):
    def command(self, port: int, data_dir: Path) -> list[str]:
        return ["node", str(PEERS / "hocuspocus_server.mjs"), str(port)]

    def url_template(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}/"

    def version(self) -> str:
        return (
            f"@hocuspocus/server {_npm_version('@hocuspocus/server')} (yjs {_npm_version('yjs')})"
        )


class PycrdtWebsocket(ServerKind):
    def command(self, port: int, data_dir: Path) -> list[str]:
        return [sys.executable, str(PEERS / "pycrdt_server.py"), str(port)]

    def version(self) -> str:
        return f"pycrdt-websocket {version('pycrdt-websocket')} (pycrdt {version('pycrdt')})"


class BareRelay(ServerKind):
    def command(self, port: int, data_dir: Path) -> list[str]:
        return [sys.executable, str(PEERS / "bare_relay.py"), str(port)]

    def version(self) -> str:
        return f"bench/peers/bare_relay.py (uvloop {version('uvloop')}; no document, the floor)"


SERVERS: dict[str, ServerKind] = {
    "blackboard": Blackboard("blackboard", "plain", persistent=True),
    "y-websocket": YWebsocketServer("y-websocket", "plain", persistent=False),
    "hocuspocus": Hocuspocus("hocuspocus", "hocuspocus", persistent=False),
    "pycrdt-websocket": PycrdtWebsocket("pycrdt-websocket", "plain", persistent=False),
    "floor": BareRelay("floor", "plain", persistent=False),
}


@dataclass
class RunningServer:
    kind: ServerKind
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.kind.name}-{self.port}.log"

    def spec(self) -> dict[str, str]:
        """What a load generator needs to reach it."""
        return {"url": self.kind.url_template(self.port), "framing": self.kind.framing}

    async def start(self) -> RunningServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.kind.command(self.port, self.data_dir),
                cwd=PEERS if self.kind.name != "blackboard" else ROOT,
                env={**os.environ, **self.kind.env()},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.kind.name} exited at start:\n{self.logs()}")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 1.0
                )
                writer.close()
                return self
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.kind.name} did not listen in {START_TIMEOUT_S}s")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    async def stop(self) -> None:
        """SIGTERM (Blackboard flushes), then SIGKILL if it takes too long."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
