"""The stored record of which attempt each task-status write counted for.

A Doc keeps a status value but not the attempt its writer saw, and after a reload the
lattice tracker (`sync.lattice`) must still know it: a stale replica's write, based on a
status that has since been overwritten, counts for that status's attempt. So each log
row carries the epochs of the status writes in it (`doc_updates.status_epochs`), and
compaction keeps them all in the snapshot.

Entries are self-delimiting, so records join by concatenation (the storage layer never
reads them): varuint(client) varuint(clock) varuint(length) float64-be(epoch), where
NaN means "counts for no known attempt" (a stale write).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

from sync.protocol import ProtocolError, Reader, encode_varuint

_EPOCH = struct.Struct(">d")

Epoch = float


def encode_entry(client: int, clock: int, length: int, epoch: Epoch | None) -> bytes:
    return (
        encode_varuint(client)
        + encode_varuint(clock)
        + encode_varuint(length)
        + _EPOCH.pack(math.nan if epoch is None else epoch)
    )


def decode(record: bytes) -> Iterator[tuple[int, int, int, Epoch | None]]:
    """(client, clock, length, epoch or None) of each entry; ProtocolError if damaged."""
    reader = Reader(record)
    while not reader.at_end():
        client, clock, length = reader.varuint(), reader.varuint(), reader.varuint()
        end = reader.pos + _EPOCH.size
        if end > len(record):
            raise ProtocolError("truncated status epoch")
        (epoch,) = _EPOCH.unpack_from(record, reader.pos)
        reader.pos = end
        yield client, clock, length, None if math.isnan(epoch) else epoch
