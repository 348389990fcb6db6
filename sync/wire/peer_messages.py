"""What server instances tell each other about one project, one Redis message each.

    update:    b"u" varstring(instance) varuint(counter) varuint(sent_at_us)
               varstring(actor) update-bytes
    awareness: b"a" varstring(instance) awareness-update-bytes   (a change)
    snapshot:  b"s" varstring(instance) awareness-update-bytes   (all of that instance's
               states: any other state a receiver holds from that instance is gone)
    query:     b"q" varstring(instance)   (a room (re)subscribed: peers answer with "s")

`counter` numbers an instance's updates of one project 1, 2, 3, ...: a receiver that sees
a number jump knows it missed a message and reads the log. `sent_at_us` (the sender's
wall clock, µs since the epoch) gives receivers the Redis lag.
"""

from __future__ import annotations

from dataclasses import dataclass

from blackboard.sync.wire.protocol import ProtocolError, Reader, encode_varbytes, encode_varuint

UPDATE = ord("u")
AWARENESS = ord("a")
SNAPSHOT = ord("s")
QUERY = ord("q")


@dataclass(frozen=True, slots=True)
class PeerMessage:
    kind: int
    instance: str
    payload: bytes = b""
    counter: int = 0
    actor: str = ""
    sent_at_us: int = 0


def _header(kind: int, instance: str) -> bytes:
    return bytes((kind,)) + encode_varbytes(instance.encode())


def encode_update(instance: str, counter: int, actor: str, update: bytes, sent_at_us: int) -> bytes:
    return (
        _header(UPDATE, instance)
        + encode_varuint(counter)
        + encode_varuint(sent_at_us)
        + encode_varbytes(actor.encode())
        + update
    )


def encode_awareness(instance: str, payload: bytes) -> bytes:
    return _header(AWARENESS, instance) + payload


def encode_snapshot(instance: str, payload: bytes) -> bytes:
    return _header(SNAPSHOT, instance) + payload


def encode_query(instance: str) -> bytes:
    return _header(QUERY, instance)


def decode(data: bytes) -> PeerMessage:
    """Raises ProtocolError on anything malformed (never trust the wire, even Redis)."""
    if not data:
        raise ProtocolError("empty peer message")
    reader = Reader(data)
    kind = reader.varuint()
    instance = reader.varstring()
    if kind == UPDATE:
        counter = reader.varuint()
        sent_at_us = reader.varuint()
        actor = reader.varstring()
        return PeerMessage(kind, instance, data[reader.pos :], counter, actor, sent_at_us)
    if kind in (AWARENESS, SNAPSHOT):
        return PeerMessage(kind, instance, data[reader.pos :])
    if kind == QUERY:
        return PeerMessage(kind, instance)
    raise ProtocolError(f"unknown peer message kind {kind}")
