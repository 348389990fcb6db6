"""The stored record of every write to a lattice field: what `sync.rules.lattice` knew of it.

A Doc keeps the status an entry shows, not the values that lost a race or were
overwritten (their content is dropped), nor the epoch (task attempt, shot revision) each
status write counted for.
Yet a reloaded tracker needs both, or it would take the shown status for the maximum
and, for a stale replica's write based on an overwritten status, not know its attempt.
So each log row carries the entries of the lattice writes in it
(`doc_updates.status_epochs`), and compaction keeps them all in the snapshot.

Entries are self-delimiting, so records join by concatenation (the storage layer never
reads them): varuint(client) varuint(clock) varuint(length) u8(kind) float64-be(epoch)
[varstring(value) for STATUS_VALUE]. `epoch` is the attempt a status write counted for
(NaN: none, a stale write), or the number an attempt write wrote. Rows written before
shots had a revision hold their shot-status writes at epoch 0: revision 0, as read now.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from blackboard.sync.wire.protocol import ProtocolError, Reader, encode_varbytes, encode_varuint

_EPOCH = struct.Struct(">d")
STATUS = 0  # a status write whose value is not text
STATUS_VALUE = 1  # a status write, with its value
ATTEMPT = 2  # a write of the epoch field (task `attempt`, shot `revision`)

Epoch = float


@dataclass(frozen=True, slots=True)
class Entry:
    client: int
    clock: int
    length: int
    kind: int
    epoch: Epoch | None
    value: str | None = None  # STATUS_VALUE only


def encode_entry(entry: Entry) -> bytes:
    kind = STATUS_VALUE if entry.kind == STATUS and entry.value is not None else entry.kind
    out = (
        encode_varuint(entry.client)
        + encode_varuint(entry.clock)
        + encode_varuint(entry.length)
        + bytes((kind,))
        + _EPOCH.pack(math.nan if entry.epoch is None else entry.epoch)
    )
    if kind == STATUS_VALUE:
        assert entry.value is not None
        out += encode_varbytes(entry.value.encode())
    return out


def decode(record: bytes) -> Iterator[Entry]:
    """Each entry of `record` (STATUS_VALUE reads back as STATUS with its value);
    ProtocolError if it is damaged."""
    reader = Reader(record)
    while not reader.at_end():
        client, clock, length = reader.varuint(), reader.varuint(), reader.varuint()
        end = reader.pos + 1 + _EPOCH.size
        if end > len(record):
            raise ProtocolError("truncated lattice entry")
        kind = record[reader.pos]
        (epoch,) = _EPOCH.unpack_from(record, reader.pos + 1)
        reader.pos = end
        if kind not in (STATUS, STATUS_VALUE, ATTEMPT):
            raise ProtocolError(f"unknown lattice entry kind {kind}")
        value = reader.varstring() if kind == STATUS_VALUE else None
        known = None if math.isnan(epoch) else epoch
        yield Entry(client, clock, length, STATUS if value is not None else kind, known, value)
