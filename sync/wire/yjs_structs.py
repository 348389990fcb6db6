"""Reading the structs of a Yjs v1 update without a Doc (pycrdt does not expose them).

The lattice rules need what a Doc forgets: the value of a map write that lost a
concurrent last-writer-wins race is gone from the Doc, and from the update its
transaction emits, but it is still in the update its author sent. So the server reads
those bytes: each item's id, where it sits (origin, parent, key) and, for a single JSON
value, the value. Only updates the Doc already accepted are read; anything this reader
does not know (a newer content kind, a varuint past 53 bits) raises ProtocolError and
the caller falls back to what the Doc shows.

Layout (yjs `encoding.js`, lib0 `decoding.js`): varuint client count, then per client
`varuint struct count, varuint client, varuint first clock` and the structs, then the
delete set.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pycrdt import get_state, get_update

from blackboard.persistence.yrs_guard import YrsError, yrs_guard
from blackboard.sync.wire.protocol import MAX_VARUINT_BYTES, ProtocolError, Reader
from blackboard.sync.wire.yjs_encoding import DeleteRange, decode_state_vector, read_delete_ranges

Id = tuple[int, int]  # (client, clock)


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()  # the item holds no single JSON value (deleted, a type, text...)

# Content kinds (the low 5 bits of an item's info byte).
GC, DELETED, JSON_CONTENT, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
TYPE_MAP = 1  # the type ref of a Y.Map
_NAMED_TYPES = (3, 5)  # XmlElement and XmlHook carry a name
_KNOWN_TYPES = range(7)
_MAX_DEPTH = 64  # nesting of one JSON value


@dataclass(slots=True)
class Item:
    client: int
    clock: int
    length: int
    kind: int  # one of the content kinds above
    origin: Id | None = None
    right_origin: Id | None = None
    parent_root: str | None = None  # the parent, when it is a root type
    parent_id: Id | None = None  # the parent, when it is a nested type
    key: str | None = None  # the map key (parentSub), when written explicitly
    type_ref: int | None = None  # for TYPE content
    value: object = NO_VALUE  # for ANY or JSON content holding exactly one value


@dataclass(slots=True)
class DecodedUpdate:
    items: list[Item]
    deleted: list[DeleteRange]


class _StructReader(Reader):
    __slots__ = ()

    def varuint(self) -> int:
        # Most varuints of an update are single bytes: skip the general loop for them.
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:
            self.pos = pos + 1
            return data[pos]
        # Client ids take five bytes, clocks two or three: no bounds check per byte
        # while the whole varuint is there (the general loop raises the errors).
        value = shift = 0
        for byte in data[pos : pos + MAX_VARUINT_BYTES]:
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
        return super().varuint()

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("truncated update")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def fixed(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ProtocolError("truncated update")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def varint(self) -> int:
        """lib0 signed varint: 6 bits and a sign in the first byte, then 7 per byte."""
        first = self.byte()
        value, shift, more = first & 0x3F, 6, first & 0x80
        while more:
            if shift > 56:
                raise ProtocolError("varint too long")
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            more = byte & 0x80
        return -value if first & 0x40 else value

    def id(self) -> Id:
        return self.varuint(), self.varuint()

    def any(self, depth: int = 0) -> object:
        if depth > _MAX_DEPTH:
            raise ProtocolError("value nested too deep")
        tag = self.byte()
        if tag in (127, 126):  # undefined, null
            return None
        if tag == 125:
            return self.varint()
        if tag == 124:
            return struct.unpack(">f", self.fixed(4))[0]
        if tag == 123:
            return struct.unpack(">d", self.fixed(8))[0]
        if tag == 122:
            return struct.unpack(">q", self.fixed(8))[0]
        if tag in (121, 120):
            return tag == 120
        if tag == 119:
            return self.varstring()
        if tag == 118:
            return {self.varstring(): self.any(depth + 1) for _ in range(self.varuint())}
        if tag == 117:
            return [self.any(depth + 1) for _ in range(self.varuint())]
        if tag == 116:
            return self.varbytes()
        raise ProtocolError(f"unknown value tag {tag}")


def decode_update(update: bytes) -> DecodedUpdate:
    """The items and the delete set of a v1 update; ProtocolError if it does not read."""
    reader = _StructReader(update)
    items: list[Item] = []
    for _ in range(reader.varuint()):
        count, client, clock = reader.varuint(), reader.varuint(), reader.varuint()
        for _ in range(count):
            info = reader.byte()
            kind = info & 0x1F
            if kind in (GC, SKIP):
                clock += reader.varuint()
                continue
            item = _item(reader, client, clock, info, kind)
            items.append(item)
            clock += item.length
    return DecodedUpdate(items, read_delete_ranges(reader))


@dataclass(slots=True)
class StructSpan:
    """Where one struct of an update is: its clock range, its bytes, and the ids it needs
    integrated first (origin, right origin, parent)."""

    clock: int
    length: int
    start: int  # offset of its first byte in the update
    end: int
    needs: tuple[Id, ...]
    skip: bool  # a gap a merged update leaves, not a struct


class Spans(NamedTuple):
    clients: dict[int, list[StructSpan]]  # each client's structs, in the update's order
    delete_set: int  # the offset of the delete set, which reads to the end
    deleted: list[DeleteRange]


def struct_spans(update: bytes) -> Spans:
    """Each client's structs, in the update's order, and the offset of its delete set
    (which must read to the end). A v1 struct carries no state from the one before it, so
    a run of spans is an update's body on its own. ProtocolError if it does not read."""
    reader = _StructReader(update)
    clients: dict[int, list[StructSpan]] = {}
    for _ in range(reader.varuint()):
        count, client, clock = reader.varuint(), reader.varuint(), reader.varuint()
        if client in clients:
            raise ProtocolError(f"client {client} twice in one update")
        spans = clients[client] = []
        for _ in range(count):
            start = reader.pos
            info = reader.byte()
            kind = info & 0x1F
            if kind in (GC, SKIP):
                length, needs = reader.varuint(), ()
            else:
                item = _item(reader, client, clock, info, kind)
                length = item.length
                needs = tuple(i for i in (item.origin, item.right_origin, item.parent_id) if i)
            spans.append(StructSpan(clock, length, start, reader.pos, needs, kind == SKIP))
            clock += length
    delete_set = reader.pos
    deleted = read_delete_ranges(reader)
    if not reader.at_end():
        raise ProtocolError("trailing bytes after the delete set")
    return Spans(clients, delete_set, deleted)


def clock_ends(update: bytes) -> dict[int, int]:
    """How far in each client's clock a Doc must have got to hold all of `update`: past
    its last struct (a skip, a gap a merged update leaves, is none) and past every item
    its delete set names. ProtocolError if it does not read."""
    spans = struct_spans(update)
    ends = {}
    for client, runs in spans.clients.items():
        structs = [span for span in runs if not span.skip]
        if structs:
            ends[client] = structs[-1].clock + structs[-1].length
    for deleted in spans.deleted:
        ends[deleted.client] = max(ends.get(deleted.client, 0), deleted.end)
    return ends


def held_back(state_vector: bytes, updates: Sequence[bytes]) -> list[int]:
    """Which of `updates` a Doc at `state_vector` that has applied them all keeps structs
    of aside, waiting for an update it has not seen: those reaching further in a client's
    clock than it does. yrs's state vector of an update (`get_state`) misses every client
    not starting there at clock 0: it stands in only for an update this reader cannot
    read (counting that one as held would stop compaction for nothing)."""
    have = decode_state_vector(state_vector)
    held = []
    for index, update in enumerate(updates):
        if _within(update, state_vector, have):
            continue
        try:
            ends = clock_ends(update)
        except ProtocolError:
            ends = decode_state_vector(get_state(update))
        if any(end > have.get(client, 0) for client, end in ends.items()):
            held.append(index)
    return held


def _within(update: bytes, state_vector: bytes, have: dict[int, int]) -> bool:
    """Whether yrs finds no struct of `update` past `state_vector` (the diff it makes
    holds none) and the delete set, which the diff keeps whole, names nothing past it:
    the quick answer (under half the cost of `clock_ends`) for nearly every stored
    update. False sends an update to the exact reading (a struct past the state vector
    may be a skip, which holds nothing back)."""
    try:
        with yrs_guard:
            diff = get_update(update, state_vector)
        reader = _StructReader(diff)
        if reader.varuint() != 0:
            return False
        return all(r.end <= have.get(r.client, 0) for r in read_delete_ranges(reader))
    except (YrsError, ProtocolError):
        return False


def struct_count(update: bytes) -> int | None:
    """How many structs a v1 update holds, read from its header alone: None unless they
    all come from one client (the count of the next one is past their structs)."""
    reader = _StructReader(update)
    try:
        return reader.varuint() if reader.varuint() == 1 else None
    except ProtocolError:
        return None


def decode_delete_set(delete_set: bytes) -> list[DeleteRange]:
    return read_delete_ranges(Reader(delete_set))


def _item(reader: _StructReader, client: int, clock: int, info: int, kind: int) -> Item:
    item = Item(client, clock, 1, kind)
    if info & 0x80:
        item.origin = reader.id()
    if info & 0x40:
        item.right_origin = reader.id()
    if not info & 0xC0:  # no neighbour to copy the parent from: it is written out
        if reader.varuint() == 1:
            item.parent_root = reader.varstring()
        else:
            item.parent_id = reader.id()
        if info & 0x20:
            item.key = reader.varstring()
    _content(reader, item)
    return item


def _content(reader: _StructReader, item: Item) -> None:
    kind = item.kind
    if kind == DELETED:
        item.length = reader.varuint()
    elif kind == JSON_CONTENT:
        texts = [reader.varstring() for _ in range(reader.varuint())]
        item.length = len(texts)
        if len(texts) == 1 and texts[0] != "undefined":
            try:
                item.value = json.loads(texts[0])
            except ValueError:
                pass
    elif kind == BINARY:
        reader.varbytes()
    elif kind == STRING:
        text = reader.varstring()
        item.length = len(text.encode("utf-16-le")) // 2  # Yjs counts UTF-16 code units
    elif kind == EMBED:
        reader.varstring()
    elif kind == FORMAT:
        reader.varstring()
        reader.varstring()
    elif kind == TYPE:
        item.type_ref = reader.varuint()
        if item.type_ref not in _KNOWN_TYPES:
            raise ProtocolError(f"unknown shared type {item.type_ref}")
        if item.type_ref in _NAMED_TYPES:
            reader.varstring()
    elif kind == ANY:
        count = reader.varuint()
        if count == 1:  # a map write: the most common struct by far
            item.value = reader.any()
        else:
            for _ in range(count):
                reader.any()
            item.length = count
    elif kind == DOC:
        reader.varstring()
        reader.any()
    else:
        raise ProtocolError(f"unknown content kind {kind}")
    if item.length < 1:
        raise ProtocolError("empty struct")


# A float in lib0's `writeAny` (ANY content): tag 123 then a big-endian double, or tag
# 124 then a float (what yjs and yrs write for Infinity). Its exponent bits all set
# mean NaN or ±Infinity.
_NON_FINITE_FLOAT = re.compile(rb"\x7b[\x7f\xff][\xf0-\xff]|\x7c[\x7f\xff][\x80-\xff]")


def may_hold_non_finite(update: bytes) -> bool:
    """False only if no value of `update` can be NaN or ±Infinity: one scan of the bytes
    (other bytes may match too: then the caller looks at what the update touched)."""
    return _NON_FINITE_FLOAT.search(update) is not None
