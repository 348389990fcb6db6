"""Splitting a big update into chunks (`sync.wire.yjs_chunks`): applied in order to a
fresh Doc, the chunks give exactly the document the whole update gives, each chunk
integrates at once (nothing waits for a later chunk), and each stays under the cap."""

from __future__ import annotations

import random

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText, get_state

from blackboard.sync.wire.protocol import ProtocolError
from blackboard.sync.wire.yjs_chunks import chunk_layout, in_chunks
from blackboard.sync.wire.yjs_encoding import decode_state_vector, structless_delete_ranges
from blackboard.sync.wire.yjs_structs import decode_update, struct_spans

HEADER = 32  # a chunk's header and delete set: counts, client ids and clocks


def _edit(doc: Doc, rng: random.Random) -> None:
    """One random edit of a map, an array, a text, nested types or an XML fragment."""
    shots = doc.get("shots", type=Map)
    order = doc.get("order", type=Array)
    notes = doc.get("notes", type=Text)
    with doc.transaction():
        op = rng.randrange(8)
        key = f"S{rng.randrange(12)}"
        if op == 0:
            shots[key] = Map({"title": f"tïtle 🎬 {rng.random()}", "n": rng.randrange(100)})
        elif op == 1 and key in shots and isinstance(shots[key], Map):
            shots[key]["status"] = rng.choice(["draft", "review", "final"])
            shots[key]["prompt"] = Text("p" * rng.randrange(1, 200))
        elif op == 2 and key in shots:
            del shots[key]
        elif op == 3:
            order.insert(rng.randrange(len(order) + 1), rng.choice([key, 1.5, [1, 2], None]))
        elif op == 4 and len(order):
            start = rng.randrange(len(order))
            del order[start : min(len(order), start + rng.randrange(1, 4))]
        elif op == 5:
            notes.insert(rng.randrange(len(notes) + 1), "hello " * rng.randrange(1, 30))
        elif op == 6 and len(notes):
            start = rng.randrange(len(notes))
            del notes[start : min(len(notes), start + rng.randrange(1, 20))]
        else:
            xml = doc.get("script", type=XmlFragment)
            element = xml.children.append(XmlElement("scene", {"n": str(rng.randrange(9))}))
            element.children.append(XmlText("line " * rng.randrange(1, 10)))


def _document(seed: int) -> bytes:
    """A document edited concurrently by several clients that sync now and then."""
    rng = random.Random(seed)
    replicas = [Doc(client_id=rng.randrange(1, 2**32)) for _ in range(rng.randrange(1, 6))]
    for _ in range(rng.randrange(50, 400)):
        _edit(rng.choice(replicas), rng)
        if rng.random() < 0.2:
            a, b = rng.sample(replicas, 2) if len(replicas) > 1 else (replicas[0], replicas[0])
            b.apply_update(a.get_update(b.get_state()))
    merged = Doc()
    for replica in replicas:
        merged.apply_update(replica.get_update())
    return merged.get_update()


def _applied(updates: list[bytes]) -> Doc:
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
        # Everything the chunk holds is integrated now, not pending.
        have = decode_state_vector(doc.get_state())
        for client, clock in decode_state_vector(get_state(update)).items():
            assert have.get(client, 0) >= clock
    return doc


def _deleted(doc: Doc) -> list[tuple[int, int, int]]:
    """The deleted clocks, adjacent ranges joined."""
    ranges: list[tuple[int, int, int]] = []
    for r in sorted(decode_update(doc.get_update()).deleted, key=lambda r: (r.client, r.clock)):
        if ranges and ranges[-1][0] == r.client and ranges[-1][2] == r.clock:
            ranges[-1] = (r.client, ranges[-1][1], r.end)
        else:
            ranges.append((r.client, r.clock, r.end))
    return ranges


def _assert_same(pieces: Doc, whole: Doc) -> None:
    """The same items, deletions and content. The encodings may differ in how runs of
    deleted items are cut into structs: yrs joins adjacent ones integrated in one
    transaction, not those that arrived in two chunks."""
    # (A state vector's encoding lists clients in the order of yrs's hash map.)
    assert decode_state_vector(pieces.get_state()) == decode_state_vector(whole.get_state())
    assert _deleted(pieces) == _deleted(whole)
    assert _content(pieces) == _content(whole)
    for doc, other in ((pieces, whole), (whole, pieces)):
        assert structless_delete_ranges(doc.get_update(other.get_state())) is not None


def split_update(update: bytes, max_bytes: int) -> list[bytes]:
    """The chunks a load applies, as it cuts them."""
    return list(in_chunks(update, chunk_layout(update, max_bytes)))


def _content(doc: Doc) -> dict[str, object]:
    return {
        "shots": doc.get("shots", type=Map).to_py(),
        "order": doc.get("order", type=Array).to_py(),
        "notes": str(doc.get("notes", type=Text)),
        "script": str(doc.get("script", type=XmlFragment)),
    }


@pytest.mark.parametrize("seed", range(40))
def test_chunks_applied_in_order_give_the_same_document(seed: int) -> None:
    update = _document(seed)
    cap = random.Random(seed).choice([64, 200, 1000, 5000])
    chunks = split_update(update, cap)
    whole = _applied([update])
    pieces = _applied(chunks)
    _assert_same(pieces, whole)
    largest_struct = max(
        span.end - span.start for spans in struct_spans(update)[0].values() for span in spans
    )
    for chunk in chunks[:-1]:
        assert len(chunk) <= max(cap, largest_struct) + HEADER
    if len(update) > cap:
        assert len(chunks) > 1


def test_a_struct_bigger_than_the_cap_is_a_chunk_of_its_own() -> None:
    doc = Doc(client_id=7)
    doc.get("notes", type=Text).insert(0, "x" * 10_000)  # one struct
    doc.get("shots", type=Map)["S1"] = "a"
    doc.get("shots", type=Map)["S2"] = "b"
    update = doc.get_update()
    chunks = split_update(update, 1000)
    assert len(chunks) == 2
    assert _applied(chunks).get_update() == _applied([update]).get_update()


def test_structs_come_after_what_they_need_from_other_clients() -> None:
    """Client 1's items sit between client 2's: the chunk order follows the items'
    origins, not the clients' order in the update."""
    a, b = Doc(client_id=1), Doc(client_id=2)
    for i in range(30):
        writer, reader = (a, b) if i % 2 else (b, a)
        notes = writer.get("notes", type=Text)
        notes.insert(len(notes), f"{i:03d}" * 20)
        reader.apply_update(writer.get_update(reader.get_state()))
    update = a.get_update()
    chunks = split_update(update, 100)
    assert len(chunks) > 10
    _assert_same(_applied(chunks), _applied([update]))


def test_a_small_update_is_not_split() -> None:
    doc = Doc()
    doc.get("shots", type=Map)["S1"] = "a"
    update = doc.get_update()
    assert split_update(update, len(update)) == [update]
    # Not even read: cut as one chunk, a one-struct update gives the same bytes back.
    assert chunk_layout(update, len(update)) is None


@pytest.mark.parametrize("garbage", [b"\x05\x01\x02", b"\x01\x01\x01\x00\x1f", b"\x00\x00\x00"])
def test_bytes_that_do_not_read_raise_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        split_update(garbage, 1)
