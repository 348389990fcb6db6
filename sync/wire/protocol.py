"""The y-websocket wire protocol (y-protocols 1.0), decoded strictly.

A frame is `varuint type` then a body: sync (0) carries `varuint subtype` and a
`varbytes` payload; awareness (1) a `varbytes` awareness update; auth (2) a
`varuint` subtype and a reason; query-awareness (3) nothing. Type 100 is Blackboard's
durable ack (a varuint count), sent only to connections that asked with `ack=1`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    ACK = 100


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class ProtocolError(ValueError):
    """A frame that does not follow the protocol."""


MAX_VARUINT_BYTES = 8  # 53-bit integers need at most 8 bytes
MAX_AWARENESS_ENTRIES = 10_000  # per message


def encode_varuint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_varbytes(data: bytes) -> bytes:
    return encode_varuint(len(data)) + data


class Reader:
    """Bounds-checked reading of varuints and byte strings."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varuint(self) -> int:
        value = shift = 0
        for _ in range(MAX_VARUINT_BYTES):
            if self.pos >= len(self.data):
                raise ProtocolError("truncated varuint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise ProtocolError("varuint too long")

    def varbytes(self) -> bytes:
        length = self.varuint()
        end = self.pos + length
        if end > len(self.data):
            raise ProtocolError("truncated byte string")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def varstring(self) -> str:
        try:
            return self.varbytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("invalid utf-8 string") from exc

    def at_end(self) -> bool:
        return self.pos >= len(self.data)


@dataclass(slots=True)  # not frozen: one per update, and frozen fields cost in __init__
class SyncMessage:
    kind: SyncType
    payload: bytes  # a state vector (STEP1) or an update (STEP2, UPDATE)


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwarenessMessage:
    pass


@dataclass(frozen=True, slots=True)
class AuthMessage:
    reason: str


Message = SyncMessage | AwarenessMessage | QueryAwarenessMessage | AuthMessage


_SYNC_TYPES = tuple(SyncType)  # by value


def decode_message(frame: bytes) -> Message:
    # Nearly every frame is a sync update: both leading varuints are single bytes, and
    # so is the length of a small update. Read here without the general loop (same
    # result, a third of the time).
    if len(frame) > 2 and frame[0] == 0 and frame[1] < len(_SYNC_TYPES):
        size = frame[2]
        if size < 0x80 and 3 + size <= len(frame):
            payload = frame[3 : 3 + size]
        else:
            reader = Reader(frame)
            reader.pos = 2
            payload = reader.varbytes()
        return SyncMessage(_SYNC_TYPES[frame[1]], payload)
    reader = Reader(frame)
    kind = reader.varuint()
    if kind == MessageType.SYNC:
        sub = reader.varuint()
        if sub not in (SyncType.STEP1, SyncType.STEP2, SyncType.UPDATE):
            raise ProtocolError(f"unknown sync message type {sub}")
        return SyncMessage(SyncType(sub), reader.varbytes())
    if kind == MessageType.AWARENESS:
        return AwarenessMessage(reader.varbytes())
    if kind == MessageType.QUERY_AWARENESS:
        return QueryAwarenessMessage()
    if kind == MessageType.AUTH:
        reader.varuint()
        return AuthMessage(reader.varstring() if not reader.at_end() else "")
    raise ProtocolError(f"unknown message type {kind}")


def sync_step1(state_vector: bytes) -> bytes:
    return bytes((MessageType.SYNC, SyncType.STEP1)) + encode_varbytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    # One copy of `update`, not two: it may be a whole 20 MB document.
    return b"".join(
        (bytes((MessageType.SYNC, SyncType.STEP2)), encode_varuint(len(update)), update)
    )


def is_sync_step2(frame: bytes) -> bool:
    return frame[:2] == bytes((MessageType.SYNC, SyncType.STEP2))


# Message type, sync type and length of an update under 128 bytes (most of them).
_SMALL_UPDATE_HEADERS = [bytes((MessageType.SYNC, SyncType.UPDATE, n)) for n in range(0x80)]


def sync_update(update: bytes) -> bytes:
    if len(update) < 0x80:
        return _SMALL_UPDATE_HEADERS[len(update)] + update
    return bytes((MessageType.SYNC, SyncType.UPDATE)) + encode_varbytes(update)


def awareness_message(awareness_update: bytes) -> bytes:
    return bytes((MessageType.AWARENESS,)) + encode_varbytes(awareness_update)


def permission_denied(reason: str) -> bytes:
    return bytes((MessageType.AUTH, 0)) + encode_varbytes(reason.encode())


def ack_message(count: int) -> bytes:
    return encode_varuint(MessageType.ACK) + encode_varuint(count)


# --- awareness updates: varuint n, then n x (client id, clock, json state) ---


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state_json: str  # "null" marks a removal

    @property
    def removed(self) -> bool:
        return self.state_json == "null"


def read_awareness(payload: bytes) -> Iterator[AwarenessEntry]:
    """The entries of an awareness update one at a time, their states not checked
    (`check_awareness_state`): a reader may stop early and check only what it keeps."""
    reader = Reader(payload)
    count = reader.varuint()
    if count > MAX_AWARENESS_ENTRIES:
        raise ProtocolError("too many awareness entries")
    for _ in range(count):
        client_id, clock = reader.varuint(), reader.varuint()
        yield AwarenessEntry(client_id, clock, reader.varstring())


def check_awareness_state(entry: AwarenessEntry) -> None:
    try:
        json.loads(entry.state_json)
    except ValueError as exc:
        raise ProtocolError("awareness state is not JSON") from exc


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    entries = list(read_awareness(payload))
    for entry in entries:
        check_awareness_state(entry)
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [encode_varuint(len(entries))]
    for entry in entries:
        parts.append(encode_varuint(entry.client_id))
        parts.append(encode_varuint(entry.clock))
        parts.append(encode_varbytes(entry.state_json.encode()))
    return b"".join(parts)
