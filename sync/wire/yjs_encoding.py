"""The two parts of Yjs v1 encodings the server reads without a Doc: state vectors and
the delete set at the end of an update that carries no structs (pycrdt does not expose
them). Both are lists of varuints (lib0 encoding); anything else raises ProtocolError."""

from __future__ import annotations

from dataclasses import dataclass

from blackboard.sync.wire.protocol import ProtocolError, Reader


@dataclass(frozen=True, slots=True)
class DeleteRange:
    client: int
    clock: int
    length: int

    @property
    def end(self) -> int:
        return self.clock + self.length


# What a client with an empty document sends as its state vector (no clients: varuint 0).
EMPTY_STATE_VECTOR = b"\x00"


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """`{client id: next clock}`, as `Doc.get_state()` or `pycrdt.get_state()` encode it."""
    reader = Reader(state_vector)
    entries = {}
    for _ in range(reader.varuint()):
        client = reader.varuint()
        entries[client] = reader.varuint()
    if not reader.at_end():
        raise ProtocolError("trailing bytes after the state vector")
    return entries


def structless_delete_ranges(update: bytes) -> list[DeleteRange] | None:
    """The delete set of an update that carries no structs; None if it carries some."""
    reader = Reader(update)
    if reader.varuint() != 0:
        return None
    return read_delete_ranges(reader)


def read_delete_ranges(reader: Reader) -> list[DeleteRange]:
    """A delete set (the end of every update): per client, ranges of deleted clocks."""
    ranges = []
    for _ in range(reader.varuint()):
        client = reader.varuint()
        for _ in range(reader.varuint()):
            ranges.append(DeleteRange(client, reader.varuint(), reader.varuint()))
    return ranges
