"""The socket writer: frames as websockets would frame them, a tick's frames in one
write, a broadcast's payload framed once, nothing written once the socket is closing."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

from blackboard.web.socket_writer import (
    JOIN_LIMIT,
    FrameWriter,
    SocketClosed,
    binary_frame_header,
)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frames_are_what_websockets_sends(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert binary_frame_header(size) + payload == expected


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.frames: list[bytes] = []  # the objects written, as they were handed over
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.frames.append(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.writes.append(b"".join(pieces))
        self.frames += pieces

    def is_closing(self) -> bool:
        return self.closing


class FakeProtocol:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.transport = FakeTransport()
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_sent = False


def writer_on(protocol: FakeProtocol) -> FrameWriter:
    return FrameWriter(cast(WebSocketsSansIOProtocol, cast(Any, protocol)))


async def test_a_ticks_frames_go_out_in_one_write() -> None:
    protocol = FakeProtocol()
    writer = writer_on(protocol)
    writer.offer(b"one")
    writer.offer(b"two")
    assert protocol.transport.writes == []  # not before the end of the tick
    await asyncio.sleep(0)
    assert protocol.transport.writes == [b"\x82\x03one\x82\x03two"]
    big = bytes(JOIN_LIMIT + 1)
    writer.offer(big)
    writer.flush()  # e.g. before a close frame
    assert protocol.transport.writes[1:] == [binary_frame_header(len(big)) + big]


async def test_a_broadcast_payload_is_framed_once() -> None:
    first, second = FakeProtocol(), FakeProtocol()
    payload = b"the same update for every recipient"
    writer_on(first).offer(payload)
    writer_on(second).offer(payload)
    writer_on(second).offer(b"the next one")
    await asyncio.sleep(0)
    assert first.transport.frames == [binary_frame_header(len(payload)) + payload]
    assert second.transport.frames[0] is first.transport.frames[0]
    assert second.transport.frames[1] == b"\x82\x0cthe next one"


async def test_nothing_is_written_once_the_socket_is_closing() -> None:
    protocol = FakeProtocol()
    writer = writer_on(protocol)
    writer.offer(b"queued")
    protocol.close_sent = True  # uvicorn sent a close frame meanwhile
    await asyncio.sleep(0)
    assert protocol.transport.writes == []
    with pytest.raises(SocketClosed):
        writer.offer(b"late")


async def test_send_waits_while_the_transport_is_backed_up() -> None:
    protocol = FakeProtocol()
    writer = writer_on(protocol)
    protocol.writable.clear()  # over the high-water mark
    assert not writer.offer(b"not now")  # the caller keeps it
    sending = asyncio.create_task(writer.send(b"later"))
    await asyncio.sleep(0)
    assert not sending.done()
    protocol.writable.set()
    await asyncio.wait_for(sending, 1)
    await asyncio.sleep(0)
    assert protocol.transport.writes == [b"\x82\x05later"]


class BrokenTransport(FakeTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("the transport broke")


async def test_one_sockets_failed_write_keeps_nothing_from_the_others() -> None:
    broken, fine = FakeProtocol(), FakeProtocol()
    broken.transport = BrokenTransport()
    writer_on(broken).offer(b"lost")
    writer_on(fine).offer(b"delivered")
    await asyncio.sleep(0)
    assert fine.transport.writes == [b"\x82\x09delivered"]


class FailingOnceTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, data: bytes) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a passing failure")
        super().write(data)


async def test_a_failed_write_drops_its_frames_and_the_next_tick_writes() -> None:
    protocol = FakeProtocol()
    protocol.transport = FailingOnceTransport()
    writer = writer_on(protocol)
    writer.offer(b"lost")
    await asyncio.sleep(0)
    writer.offer(b"next")
    await asyncio.sleep(0)
    assert protocol.transport.writes == [b"\x82\x04next"]  # not the lost one again


async def test_frames_left_by_a_stopped_loop_hold_up_nothing() -> None:
    stopped = asyncio.new_event_loop()
    try:  # a frame offered on a loop that stops before its end of tick
        writer_on(FakeProtocol(stopped)).offer(b"never flushed")
    finally:
        stopped.close()
    protocol = FakeProtocol()
    writer_on(protocol).offer(b"this loop's")
    await asyncio.sleep(0)
    assert protocol.transport.writes == [b"\x82\x0bthis loop's"]
