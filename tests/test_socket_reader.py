"""The socket reader: binary messages handed to the app from the transport, in order,
with nothing lost around a pause, a disconnect, a text message or a close; and under
`blackboard serve`'s protocols, updates skip the ASGI receive queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from blackboard.sync.wire.protocol import (
    SyncMessage,
    SyncType,
    decode_message,
    sync_step1,
    sync_update,
)
from blackboard.web.app import create_app
from blackboard.web.settings import Limits, Settings
from blackboard.web.socket_reader import (
    FRAME_READER_EXTENSION,
    KEEP_PARTIAL_BYTES,
    FrameReader,
)
from blackboard.web.transport import protocols
from tests.support.api import create_project, eventually
from tests.support.server import StartServer, free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
TIMEOUT_S = 5.0


class ReaderApp:
    """An ASGI app that reads its socket through the reader once `start` is set, and
    logs in one list what the reader hands it and what ASGI `receive` brings."""

    def __init__(
        self, pauses: dict[bytes, float] | None = None, fail_on: bytes | None = None
    ) -> None:
        self.pauses = pauses or {}
        self.fail_on = fail_on
        self.log: list[tuple[str, object]] = []
        self.start = asyncio.Event()
        self.start.set()
        self.close_now = asyncio.Event()
        self.done = asyncio.Event()

    def handle(self, message: bytes) -> float:
        self.log.append(("bytes", message))
        if message == self.fail_on:
            raise ValueError("handler failed")
        return self.pauses.get(message, 0.0)

    def failed(self, exc: Exception) -> None:
        self.log.append(("failed", str(exc)))
        self.close_now.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        reader = scope["extensions"][FRAME_READER_EXTENSION]
        await self.start.wait()
        reader.start(self.handle, self.failed)
        try:
            await self._read(receive, send)
        finally:
            reader.stop()
            self.done.set()

    async def _read(self, receive: Receive, send: Send) -> None:
        close_now = asyncio.ensure_future(self.close_now.wait())
        while True:
            event = asyncio.ensure_future(receive())
            await asyncio.wait({event, close_now}, return_when=asyncio.FIRST_COMPLETED)
            if not event.done():
                event.cancel()
                await send({"type": "websocket.close", "code": 4000})
                return
            message = event.result()
            if message["type"] == "websocket.disconnect":
                self.log.append(("disconnect", message["code"]))
                close_now.cancel()
                return
            if message.get("text") is not None:
                self.log.append(("text", message["text"]))
                await send({"type": "websocket.close", "code": 4400})
                close_now.cancel()
                return
            self.log.append(("asgi bytes", message["bytes"]))


@asynccontextmanager
async def serving(
    app: ReaderApp, max_message_bytes: int = 1 << 20
) -> AsyncIterator[tuple[int, ServerState]]:
    """`app` behind the WebSocket protocol `blackboard serve` uses, on a free port; the
    port, and uvicorn's state (its open connections)."""
    config = uvicorn.Config(
        app,
        ws_max_size=max_message_bytes,
        ws_per_message_deflate=False,
        log_config=None,
        lifespan="off",
    )
    config.load()
    state = ServerState()
    _, ws = protocols(Limits())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ws(config=config, server_state=state, app_state={}), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1], state
    finally:
        server.close()
        for connection in list(state.connections):
            connection.transport.abort()
        await asyncio.wait_for(asyncio.gather(*state.tasks, return_exceptions=True), TIMEOUT_S)


class RawClient:
    """A WebSocket client that writes any frames in one TCP write (so the server parses
    them from one read)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"))

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.protocol.send_request(client.protocol.connect())
        client._flush()
        while client.protocol.state is State.CONNECTING:
            assert await client._read()
        return client

    def write(self, *frames: bytes | str | None) -> None:
        """Binary frames, text frames (str) and a close (None), in one write."""
        self._queue(frames)
        self._flush()

    async def write_in_pieces(self, piece: int, *frames: bytes | str | None) -> None:
        """The same bytes as `write`, in writes of `piece` bytes, each read on its own."""
        self._queue(frames)
        data = b"".join(self.protocol.data_to_send())
        for at in range(0, len(data), piece):
            self._writer.write(data[at : at + piece])
            await self._writer.drain()
            await asyncio.sleep(0.002)

    def _queue(self, frames: tuple[bytes | str | None, ...]) -> None:
        for frame in frames:
            if frame is None:
                self.protocol.send_close(1000)
            elif isinstance(frame, str):
                self.protocol.send_text(frame.encode())
            else:
                self.protocol.send_binary(frame)

    async def until_closed(self) -> int | None:
        """Read (answering the server's close) until the server ends the TCP connection;
        the close code the server sent."""
        while await self._read():
            pass
        self._writer.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    async def _read(self) -> bool:
        """Read once; False at the end of the connection."""
        data = await asyncio.wait_for(self._reader.read(65536), TIMEOUT_S)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.protocol.events_received()
        self._flush()
        return bool(data)

    def _flush(self) -> None:
        if not self._writer.is_closing():
            self._writer.write(b"".join(self.protocol.data_to_send()))


def handed(*messages: bytes) -> list[tuple[str, object]]:
    return [("bytes", message) for message in messages]


MESSAGES = [b"m%d" % i for i in range(20)]


async def test_messages_queued_before_the_reader_starts_come_first_in_order() -> None:
    app = ReaderApp()
    app.start.clear()
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(*MESSAGES[:10])  # uvicorn queues these for ASGI `receive`
        await asyncio.sleep(0.2)
        app.start.set()
        await asyncio.sleep(0.05)
        client.write(*MESSAGES[10:], None)
        assert await client.until_closed() == 1000
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log == [*handed(*MESSAGES), ("disconnect", 1000)]


async def test_a_pause_among_the_queued_messages_holds_the_disconnect_back() -> None:
    app = ReaderApp(pauses={MESSAGES[0]: 0.2})
    app.start.clear()
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(*MESSAGES[:5], None)  # all queued by uvicorn, the disconnect last
        assert await client.until_closed() == 1000
        app.start.set()
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log == [*handed(*MESSAGES[:5]), ("disconnect", 1000)]


async def test_a_pause_holds_what_follows_in_order_and_stops_reading() -> None:
    app = ReaderApp(pauses={MESSAGES[3]: 0.3})
    async with serving(app) as (port, state):
        client = await RawClient.connect(port)
        started = asyncio.get_running_loop().time()
        client.write(*MESSAGES[:10])
        await asyncio.sleep(0.1)
        client.write(*MESSAGES[10:])  # not read during the pause
        await asyncio.sleep(0.05)
        assert app.log == handed(*MESSAGES[:4])
        [connection] = state.connections
        assert not connection.transport.is_reading()  # TCP pushes back on the sender
        await eventually(lambda: _same(app.log, handed(*MESSAGES)), timeout=TIMEOUT_S)
        assert connection.transport.is_reading()
        assert asyncio.get_running_loop().time() - started >= 0.3
        client.write(None)
        assert await client.until_closed() == 1000
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log == [*handed(*MESSAGES), ("disconnect", 1000)]


def _same(got: object, expected: object) -> None:
    assert got == expected


async def test_a_disconnect_comes_after_the_messages_held_before_it() -> None:
    app = ReaderApp(pauses={MESSAGES[0]: 0.2, MESSAGES[2]: 0.2})
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(*MESSAGES[:5], None)
        assert await client.until_closed() == 1000
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log == [*handed(*MESSAGES[:5]), ("disconnect", 1000)]


async def test_a_message_over_the_limit_comes_after_the_messages_held_before_it() -> None:
    app = ReaderApp(pauses={MESSAGES[0]: 0.2})
    async with serving(app, max_message_bytes=1000) as (port, _):
        client = await RawClient.connect(port)
        client.write(MESSAGES[0], MESSAGES[1])
        await asyncio.sleep(0.05)  # within the pause (uvicorn drops what it parsed along
        client.write(b"x" * 1001, MESSAGES[2])  # with a message over the limit)
        assert await client.until_closed() == 1009
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log == [*handed(MESSAGES[0], MESSAGES[1]), ("disconnect", 1009)]


async def test_a_text_message_comes_after_the_messages_held_before_it() -> None:
    app = ReaderApp(pauses={MESSAGES[0]: 0.2})
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(MESSAGES[0], MESSAGES[1], "text", MESSAGES[2])
        assert await client.until_closed() == 4400
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log == [*handed(MESSAGES[0], MESSAGES[1]), ("text", "text")]


async def test_closing_during_a_pause_drops_the_held_and_reads_the_close_reply() -> None:
    app = ReaderApp(pauses={MESSAGES[0]: 0.5})
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(MESSAGES[0], MESSAGES[1])
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        app.close_now.set()
        # The server reads the client's close reply at once (not after uvicorn's 10 s
        # close timeout): the pause ended with the reader.
        assert await client.until_closed() == 4000
        assert loop.time() - closed_at < 1.0
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        await asyncio.sleep(0.6)  # past the pause: its timer is gone, nothing is handed
    assert app.log == handed(MESSAGES[0])


async def test_a_failing_handler_is_reported_and_the_socket_closes_cleanly() -> None:
    app = ReaderApp(fail_on=MESSAGES[1])
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(*MESSAGES[:4])
        # A close frame from the app: the protocol survived (an exception raised into
        # data_received would have aborted the connection).
        assert await client.until_closed() == 4000
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    # Nothing more is handed over; what follows goes to ASGI `receive` (an endpoint
    # closing the socket ignores it).
    assert app.log[:3] == [*handed(*MESSAGES[:2]), ("failed", "handler failed")]
    assert {kind for kind, _ in app.log[3:]} <= {"asgi bytes"}


def _independent_updates(count: int) -> list[bytes]:
    """Updates from distinct clients: each is applied (and forwarded) as it arrives."""
    updates = []
    for i in range(count):
        doc = Doc()
        doc.get("shots", type=Map)[f"S{i}"] = Map({"order": i})
        updates.append(doc.get_update())
    return updates


async def _forwarded(ws: websockets.ClientConnection, count: int) -> list[bytes]:
    payloads: list[bytes] = []
    while len(payloads) < count:
        message = decode_message(await asyncio.wait_for(ws.recv(), TIMEOUT_S))  # type: ignore[arg-type]
        if isinstance(message, SyncMessage) and message.kind == SyncType.UPDATE:
            payloads.append(message.payload)
    return payloads


# Every length encoding of a frame (7 bits, 16, 64), around the size a frame not
# whole in one read is kept by the reader (64 KiB), and an empty message.
SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 65537, 70_000]


def _sized(sizes: list[int]) -> list[bytes]:
    return [bytes((i + n) % 251 for n in range(size)) for i, size in enumerate(sizes)]


class ParserBytes:
    """Counts the bytes websockets' parser is given after the opening handshake."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        receive_data = ServerProtocol.receive_data

        def counted(protocol: ServerProtocol, data: bytes) -> None:
            if protocol.state is State.OPEN:
                self.count += len(data)
            receive_data(protocol, data)

        monkeypatch.setattr(ServerProtocol, "receive_data", counted)


@pytest.mark.parametrize("piece", [None, 1, 7, 4096])
async def test_frames_split_across_reads_are_handed_over_whole_and_in_order(
    piece: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = ParserBytes(monkeypatch)
    small = piece is not None and piece < 4096  # a read per few bytes: small ones only
    messages = _sized(SIZES[:6] if small else SIZES)
    app = ReaderApp()
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        if piece is None:
            client.write(*messages)
        else:
            await client.write_in_pieces(piece, *messages)
        await eventually(lambda: _same(len(app.log), len(messages)), timeout=TIMEOUT_S)
        client.write(None)
        assert await client.until_closed() == 1000
    assert app.log[: len(messages)] == handed(*messages)
    # websockets' parser was given no frame of 64 KiB or less, other than the close.
    over = sum(len(m) + 14 for m in messages if len(m) > KEEP_PARTIAL_BYTES)
    assert parser.count <= over + 8


async def test_other_frames_among_binary_ones_keep_their_order() -> None:
    app = ReaderApp()
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.protocol.send_binary(MESSAGES[0])
        client.protocol.send_ping(b"are you there")
        client.protocol.send_binary(b"frag", fin=False)  # one message in three frames
        client.protocol.send_continuation(b"ment", fin=False)
        client.protocol.send_continuation(b"ed", fin=True)
        client.protocol.send_binary(MESSAGES[1])
        client.write(MESSAGES[2])
        await eventually(lambda: _same(len(app.log), 4), timeout=TIMEOUT_S)
        client.write(None)
        assert await client.until_closed() == 1000
    assert app.log == [*handed(MESSAGES[0], b"fragmented", *MESSAGES[1:3]), ("disconnect", 1000)]


async def test_an_unmasked_frame_fails_the_socket_after_the_frames_before_it() -> None:
    app = ReaderApp()
    async with serving(app) as (port, _):
        client = await RawClient.connect(port)
        client.write(MESSAGES[0])
        client._writer.write(bytes((0x82, 2)) + b"no")  # a client's frame must be masked
        assert await client.until_closed() == 1002
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
    assert app.log[0] == ("bytes", MESSAGES[0])
    assert ("bytes", b"no") not in app.log


async def test_a_throttled_sender_loses_nothing_and_keeps_its_order(
    start_server: StartServer,
) -> None:
    # 100 messages at once, then 50 a second: the last 60 of 160 take 1.2 s, within
    # the 2 s a sender may stay throttled.
    server = await start_server(
        env={"BLACKBOARD_RATE_LIMIT": "50", "BLACKBOARD_RATE_WINDOW_S": "2"}
    )
    await create_project(server, "film")
    observer = await websockets.connect(f"{server.ws}/sync/film", compression=None)
    await observer.send(sync_step1(b"\x00"))
    sender = await websockets.connect(f"{server.ws}/sync/film", compression=None)
    updates = _independent_updates(160)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for update in updates:
        await sender.send(sync_update(update))
    forwarded = await asyncio.wait_for(_forwarded(observer, len(updates)), 10)
    assert forwarded == updates
    assert loop.time() - started >= 1.0  # it was throttled, not closed
    await sender.close()
    await observer.close()


class ReceiveCount:
    """ASGI middleware: counts the binary messages the app gets from ASGI `receive`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.binary = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> dict[str, Any]:
            message = await receive()
            if message.get("bytes") is not None:
                self.binary += 1
            return message

        await self.app(scope, counted, send)


async def test_updates_skip_the_asgi_receive_queue_under_serve(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    app = ReceiveCount(create_app(settings))
    http, ws = protocols(settings.limits)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=http, ws=ws, ws_per_message_deflate=False
    )
    server = uvicorn.Server(config)
    serving_task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _same(server.started, True), timeout=20)
        ws_url = f"ws://127.0.0.1:{port}/sync/film"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            body = {"project_id": "film", "title": "film", "budget_total": 1000}
            assert (await client.post("/api/projects", json=body)).status_code == 201
        observer = await websockets.connect(ws_url, compression=None)
        await observer.send(sync_step1(b"\x00"))
        sender = await websockets.connect(ws_url, compression=None)
        updates = _independent_updates(50)
        for update in updates:
            await sender.send(sync_update(update))
        assert await asyncio.wait_for(_forwarded(observer, len(updates)), 10) == updates
        assert app.binary == 0  # even the observer's step 1, queued before its reader started
        await sender.close()
        await observer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving_task, 30)


# What a client may send, for the property below: (kind, payload); "fragmented" is one
# binary message in three frames.
_FRAMES = st.one_of(
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(
        st.just("binary"),
        st.sampled_from([125, 126, 127, 65535, 65536, 66000]).map(lambda size: bytes(size)),
    ),
    st.tuples(st.just("text"), st.text(max_size=20).map(str.encode)),
    st.tuples(st.just("ping"), st.binary(max_size=20)),
    st.tuples(st.just("fragmented"), st.binary(min_size=3, max_size=300)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_FRAMES, max_size=12), st.lists(st.integers(1, 70_000), max_size=12))
def test_taking_frames_reads_what_websockets_would(
    frames: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    """However the bytes are cut into reads, the reader's single-frame binary messages
    and what it leaves to websockets' parser make up, in order, the messages websockets
    alone reads from the same bytes."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN)
    for kind, payload in frames:
        if kind == "binary":
            client.send_binary(payload)
        elif kind == "text":
            client.send_text(payload)
        elif kind == "ping":
            client.send_ping(payload)
        else:
            client.send_binary(payload[:1], fin=False)
            client.send_continuation(payload[1:2], fin=False)
            client.send_continuation(payload[2:], fin=True)
    data = b"".join(client.data_to_send())

    expected: list[tuple[str, bytes]] = []
    _read(_server(), data, expected)
    got: list[tuple[str, bytes]] = []
    server = _server()
    transport = SimpleNamespace(resume_reading=lambda: None)
    protocol = SimpleNamespace(
        close_sent=False, queue=asyncio.Queue(), read_paused=False, transport=transport
    )
    reader = FrameReader(protocol)  # type: ignore[arg-type]
    reader.start(lambda message: got.append(("binary", message)) or 0.0, _never_fails)
    at = 0
    for piece in [*cuts, len(data)]:
        chunk, at = data[at : at + piece], at + piece
        if not chunk:
            continue
        between = not server.reader.buffer and server.current_size is None
        rest = reader.take(chunk, 1 << 20) if reader.mid_frame or between else chunk
        if rest:
            _read(server, rest, got)
    assert not reader.mid_frame
    assert got == expected


def _server() -> ServerProtocol:
    return ServerProtocol(max_size=1 << 20, state=State.OPEN)


def _read(server: ServerProtocol, data: bytes, messages: list[tuple[str, bytes]]) -> None:
    """Add the data messages websockets' parser reads from `data` to `messages` (a
    fragmented one is joined as its frames come)."""
    server.receive_data(data)
    for frame in server.events_received():
        if frame.opcode in (Opcode.BINARY, Opcode.TEXT):
            kind = "binary" if frame.opcode is Opcode.BINARY else "text"
            messages.append((kind, bytes(frame.data)))
        elif frame.opcode is Opcode.CONT:
            kind, start = messages[-1]
            messages[-1] = (kind, start + bytes(frame.data))


def _never_fails(exc: Exception) -> None:
    raise AssertionError(f"the handler failed: {exc}")
