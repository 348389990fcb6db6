"""Sockets that hold the server without finishing a request: half-sent request lines are
closed within the header timeout, one address gets at most its cap of sockets and opens
new ones no faster than its connection rate, and the server raises its own open-files
limit (real server processes, raw TCP)."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support.api import create_project, eventually
from tests.support.server import ServerProcess, StartServer

FLOODER = "127.0.0.2"  # loopback too, but another client address than the tests' own
RECONNECTER = "127.0.0.3"  # a third one


Socket = tuple[asyncio.StreamReader, asyncio.StreamWriter]  # keep both: a lost writer closes


async def _half_request(server: ServerProcess, local: str = "127.0.0.1") -> Socket:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=(local, 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    return reader, writer


async def _closed_after(socket: Socket, timeout: float) -> float:
    """Seconds until the server closes the socket (EOF or reset)."""
    reader, _ = socket
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def _healthy(server: ServerProcess) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"{server.http}/healthz")).status_code == 200
    return time.monotonic() - started


async def test_half_sent_request_lines_are_closed_within_the_header_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(
        # 300 at once from one address is over the default connection burst: lift it.
        env={"BLACKBOARD_HEADER_TIMEOUT_S": "1", "BLACKBOARD_CONNECTION_RATE_PER_ADDRESS": "0"}
    )
    slow = [await _half_request(server) for _ in range(300)]
    assert await _healthy(server) < 1.0  # complete requests are served meanwhile
    waits = await asyncio.gather(*(_closed_after(socket, 6) for socket in slow))
    assert min(waits) > 0.5  # closed by the timeout, not at once
    assert max(waits) < 3.0, max(waits)
    assert await _healthy(server) < 1.0


async def test_a_keep_alive_connections_next_request_has_the_same_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(
        env={"BLACKBOARD_HEADER_TIMEOUT_S": "1"},
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await asyncio.wait_for(reader.readexactly(length), 5)  # the whole first response
    # The next request starts within the keep-alive time, then stalls in its headers.
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")
    await writer.drain()
    waited = await _closed_after((reader, writer), 10)
    assert 0.5 < waited < 3.0, waited
    writer.close()


async def test_one_address_gets_at_most_its_cap_of_sockets(start_server: StartServer) -> None:
    server = await start_server(
        env={"BLACKBOARD_MAX_CONNECTIONS_PER_ADDRESS": "20", "BLACKBOARD_HEADER_TIMEOUT_S": "30"}
    )
    held = [await _half_request(server, FLOODER) for _ in range(20)]
    await asyncio.sleep(0.3)  # a window for a wrongful close (nothing to wait for)
    assert not any(reader.at_eof() for reader, _ in held)
    excess = [await _half_request(server, FLOODER) for _ in range(5)]
    waits = await asyncio.gather(*(_closed_after(socket, 5) for socket in excess))
    assert max(waits) < 1.0
    assert await _healthy(server) < 1.0  # another address is not affected
    assert not any(reader.at_eof() for reader, _ in held)

    # Sockets upgraded to WebSockets count until they close, and then free their slot.
    await create_project(server, "film")
    url = f"{server.ws}/sync/film"
    sockets = []
    for _, writer in held[:3]:
        writer.close()

    async def connect_in_a_freed_slot() -> None:  # refused until the server saw the close
        try:
            sockets.append(await websockets.connect(url, local_addr=(FLOODER, 0), open_timeout=5))
        except (websockets.InvalidMessage, websockets.ConnectionClosed, OSError) as refused:
            raise AssertionError(f"no free slot yet: {refused!r}") from refused

    for _ in range(3):
        await eventually(connect_in_a_freed_slot)
    refused = await _half_request(server, FLOODER)
    assert await _closed_after(refused, 5) < 1.0
    for ws in sockets:
        await ws.close()
    # Only a socket kept open shows a free slot: time for the server to see the closes,
    # then a window for a wrongful close.
    await asyncio.sleep(0.3)
    again = await _half_request(server, FLOODER)
    await asyncio.sleep(0.3)
    assert not again[0].at_eof()


async def test_one_address_opens_new_connections_no_faster_than_its_rate(
    start_server: StartServer,
) -> None:
    server = await start_server(
        env={
            "BLACKBOARD_CONNECTION_RATE_PER_ADDRESS": "0.5",  # a token every 2 s
            "BLACKBOARD_CONNECTION_BURST_PER_ADDRESS": "5",
            "BLACKBOARD_HEADER_TIMEOUT_S": "30",
        }
    )
    await create_project(server, "film")
    url = f"{server.ws}/sync/film"
    burst = [await _half_request(server, RECONNECTER) for _ in range(5)]
    over = [await _half_request(server, RECONNECTER) for _ in range(3)]
    waits = await asyncio.gather(*(_closed_after(socket, 5) for socket in over))
    assert max(waits) < 1.0  # refused at once, before any request was read
    with pytest.raises((websockets.InvalidMessage, websockets.ConnectionClosed, OSError)):
        await websockets.connect(url, local_addr=(RECONNECTER, 0), open_timeout=5)
    # Another address is not affected, and the burst's sockets stay open.
    other = await websockets.connect(url, local_addr=(FLOODER, 0), open_timeout=5)
    assert await _healthy(server) < 1.0
    assert not any(reader.at_eof() for reader, _ in burst)

    # The bucket refills at the rate: one more in 2 s, not two (refusals took nothing).
    await asyncio.sleep(2.2)  # the bucket refills by the clock
    refilled = await websockets.connect(url, local_addr=(RECONNECTER, 0), open_timeout=5)
    assert await _closed_after(await _half_request(server, RECONNECTER), 5) < 1.0
    await refilled.close()
    await other.close()
    assert "refused 1 connection(s) over 0.5/s (burst 5) new per address" in server.logs()


async def test_the_server_raises_its_open_files_limit(start_server: StartServer) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)
    assert low < hard, "the hard limit leaves nothing to raise"
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        server = await start_server()  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert server.proc is not None
    limits = await asyncio.to_thread(Path(f"/proc/{server.proc.pid}/limits").read_text)
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line
