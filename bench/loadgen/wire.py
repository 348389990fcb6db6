"""Frames on the wire: plain y-websocket, or Hocuspocus (every frame prefixed with the
document name, and an Auth message before anything else)."""

from __future__ import annotations

from dataclasses import dataclass

from blackboard.sync.wire.protocol import (
    MessageType,
    ProtocolError,
    Reader,
    SyncType,
    encode_varbytes,
    encode_varuint,
)

# Hocuspocus message types beyond y-websocket's (its `MessageType` enum).
HOCUSPOCUS_SYNC_REPLY = 4
HOCUSPOCUS_AUTH_TOKEN = 0


@dataclass(frozen=True)
class Framing:
    """How one connection wraps y-websocket messages for its server."""

    document: str | None = None  # set for Hocuspocus: the document name prefix

    def wrap(self, message: bytes) -> bytes:
        if self.document is None:
            return message
        return encode_varbytes(self.document.encode()) + message

    def unwrap(self, frame: bytes) -> bytes:
        """The y-websocket message inside `frame`."""
        if self.document is None:
            return frame
        reader = Reader(frame)
        reader.varbytes()  # the document name; one document per connection here
        return frame[reader.pos :]

    def opening(self) -> list[bytes]:
        """Frames to send before the sync handshake (Hocuspocus: the Auth token)."""
        if self.document is None:
            return []
        auth = (
            encode_varuint(MessageType.AUTH)
            + encode_varuint(HOCUSPOCUS_AUTH_TOKEN)
            + encode_varbytes(b"bench")
        )
        return [self.wrap(auth)]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a received message is, as far as the load generator cares."""

    kind: str  # "step1", "step2", "update", "awareness", "other"
    payload: bytes


def classify(message: bytes) -> Incoming:
    """Decode the head of a y-websocket message; the payload is left as bytes."""
    reader = Reader(message)
    try:
        kind = reader.varuint()
        if kind in (MessageType.SYNC, HOCUSPOCUS_SYNC_REPLY):
            sub = reader.varuint()
            payload = reader.varbytes()
            names = {SyncType.STEP1: "step1", SyncType.STEP2: "step2", SyncType.UPDATE: "update"}
            return Incoming(names.get(sub, "other"), payload)
        if kind == MessageType.AWARENESS:
            return Incoming("awareness", b"")
    except ProtocolError:
        pass
    return Incoming("other", b"")
