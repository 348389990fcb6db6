"""Servers with auth on, tokens for them, and watching a socket until it closes."""

from __future__ import annotations

import asyncio

import websockets

from blackboard.web.tokens import Keyring, mint
from tests.support.server import ServerProcess, StartServer

SECRET = "k1:test-secret-0123456789abcdef"
KEYRING = Keyring.parse(SECRET)


def token(project: str, role: str, actor: str, ttl_s: float = 600) -> str:
    return mint(KEYRING, project, role, actor, ttl_s)


async def start_auth_server(start_server: StartServer, **env: str) -> tuple[ServerProcess, str]:
    """A server with auth on, and an admin token for every project."""
    server = await start_server(env={"BLACKBOARD_AUTH_SECRET": SECRET, **env})
    return server, token("*", "admin", "root")


async def connect(
    server: ServerProcess, project_id: str, query: str = "", **options: object
) -> websockets.ClientConnection:
    url = f"{server.ws}/sync/{project_id}" + (f"?{query}" if query else "")
    return await websockets.connect(url, compression=None, open_timeout=10, **options)


async def until_closed(
    ws: websockets.ClientConnection, timeout: float = 10.0
) -> tuple[int | None, str, list[bytes]]:
    """Read until the server closes: (close code, reason, frames received before)."""
    frames: list[bytes] = []

    async def read() -> None:
        try:
            async for frame in ws:
                frames.append(frame if isinstance(frame, bytes) else frame.encode())
        except websockets.ConnectionClosed:
            pass

    await asyncio.wait_for(read(), timeout)
    received = ws.protocol.close_rcvd
    return (received.code, received.reason, frames) if received else (None, "", frames)


def rss_bytes(server: ServerProcess) -> int:
    """Resident memory of the server process, from /proc."""
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
