"""The floor: what the sockets alone cost a Python server on this machine, for bench/.

No document, no storage, no checks: a sync step 1 gets an empty step 2 and every other
binary message goes to the room's other sockets, written at once. The WebSocket layer is
the least that works here (RFC 6455 handshake, unmasking, close and ping), on uvloop like
Blackboard. A server cannot deliver an update for less CPU than this pays; the bench
reports it beside the real servers so that a goal below it reads as the machine's limit.

    python bench/peers/bare_relay.py PORT
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys

import uvloop
from websockets.frames import apply_mask  # the C one where built, as the server's reader

from blackboard.web.socket_writer import binary_frame_header

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 16 * 1024
_MAX_MESSAGE = 64 * 1024 * 1024
_EMPTY_STEP2 = bytes((0, 1, 2, 0, 0))  # sync, step 2, an update of no structs
_CLOSE, _PING, _PONG, _BINARY = 0x8, 0x9, 0xA, 0x2


def control_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked control frame (RFC 6455 caps their payload at 125 bytes)."""
    payload = payload[:125]
    return bytes((0x80 | opcode, len(payload))) + payload


def binary_frame(payload: bytes) -> bytes:
    return binary_frame_header(len(payload)) + payload


class Relay(asyncio.Protocol):
    def __init__(self, rooms: dict[str, set[Relay]]) -> None:
        self._rooms = rooms
        self._buffer = bytearray()  # appended to in place: a big message comes in pieces
        self._room: set[Relay] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._room is not None:
            self._room.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._room is None and not self._handshake():
            return
        self._frames()

    def _handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self.transport.close()
            return False
        head = self._buffer[:end].decode("latin-1")
        del self._buffer[: end + 4]
        lines = head.split("\r\n")
        request = lines[0].split(" ")
        if len(request) != 3 or request[0] != "GET":
            self.transport.close()  # not a WebSocket handshake
            return False
        path = request[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self._room = self._rooms.setdefault(path.split("?")[0], set())
        self._room.add(self)
        return True

    def _frames(self) -> None:
        buffer, at = self._buffer, 0
        while len(buffer) - at >= 2 and not self.transport.is_closing():
            first, second = buffer[at], buffer[at + 1]
            size, head = second & 0x7F, at + 2
            if size == 126:
                if len(buffer) - head < 2:
                    break
                (size,) = struct.unpack_from("!H", buffer, head)
                head += 2
            elif size == 127:
                if len(buffer) - head < 8:
                    break
                (size,) = struct.unpack_from("!Q", buffer, head)
                head += 8
            if size > _MAX_MESSAGE:
                self.transport.close()
                return
            if len(buffer) - head < 4 + size:
                break
            mask, start = buffer[head : head + 4], head + 4
            self._message(first & 0x0F, apply_mask(buffer[start : start + size], mask))
            at = start + size
        del buffer[:at]

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == _BINARY:
            if payload[:2] == b"\x00\x00":  # sync step 1
                self.transport.write(binary_frame(_EMPTY_STEP2))
                return
            out = binary_frame(payload)
            for other in self._room:
                if other is not self:
                    other.transport.write(out)
        elif opcode == _PING:
            self.transport.write(control_frame(_PONG, payload))
        elif opcode == _CLOSE:
            self.transport.write(control_frame(_CLOSE, payload[:2]))
            self.transport.close()


async def serve(port: int) -> None:
    rooms: dict[str, set[Relay]] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Relay(rooms), "127.0.0.1", port, backlog=4096)
    print(f"bare relay listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
