"""Fuzzing the update path: malformed updates never crash the process, never let a
BaseException escape, and leave the live document (and the log) exactly as they were.

Inputs: real updates, mutated (truncated, bit-flipped, bytes inserted or deleted, huge
varints spliced in, pieces of other updates), updates of other documents, and
hand-built shapes of the kind y-octo's fuzzers keep as regressions (cyclic nesting,
unsorted or foreign delete sets, clock overflow, zero-length structs). Crashers found
while writing this are kept in tests/regressions/*.bin (they panic yrs or modify a plain
Doc part-way) and replayed on every run.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text, XmlElement, XmlFragment, XmlText

from blackboard.schemas.views import doc_to_json
from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.rules.validation import MalformedUpdate
from blackboard.sync.wire.protocol import encode_varbytes, encode_varuint, sync_update
from tests.support.live_room import LiveRoom, drained, live_room, memory_connection
from tests.support.regressions import REGRESSIONS, base_doc

CLIENT = Origin(Source.CLIENT, "fuzzer")


def _real_updates() -> list[bytes]:
    doc = base_doc()
    updates = [doc.get_update()]
    subscription = doc.observe(lambda event: updates.append(event.update))
    shots = doc.get("shots", type=Map)
    with doc.transaction():
        shots["S1"]["status"] = "review"
        del shots["S1"]["n"]
    notes = doc.get("notes", type=Text)
    notes += "héllo 😀 world"
    notes.insert(1, "ZZ")
    del notes[0:2]
    doc.get("tasks", type=Map)["T1"] = {"kind": "render", "attempt": "2"}
    xml = doc.get("xml", type=XmlFragment)
    xml.children.append(XmlElement("p", {"a": "b"}, [XmlText("hi")]))
    doc.unobserve(subscription)
    updates.append(doc.get_update())
    # Another document entirely, with the same client id (its structs clash) and not.
    for client_id in (3, 77):
        other = Doc(client_id=client_id)
        other.get("shots", type=Map)["S9"] = Map({"title": "elsewhere"})
        other.get("shots", type=Map)["S9"]["title"] = "moved"
        updates.append(other.get_update())
    return updates


def _u(*values: int) -> bytes:
    return b"".join(encode_varuint(v) for v in values)


def _s(text: str) -> bytes:
    return encode_varbytes(text.encode())


def _shapes() -> list[bytes]:
    """Hand-built updates: one client block each (varuint 1, struct count, client,
    clock, structs), then a delete set."""
    no_deletes = _u(0)
    return [
        # A map nested in itself.
        _u(1, 1, 9, 0) + bytes([0x07]) + _u(0, 9, 0) + _u(1) + no_deletes,
        # An item whose parent is a string item, not a type.
        _u(1, 1, 3, 50)
        + bytes([0x28])
        + _u(0, 3, 1)
        + _s("k")
        + _u(1)
        + b"\x77"
        + _s("v")
        # (the delete set)
        + no_deletes,
        # Clock overflow: a struct at the end of the 53-bit range.
        _u(1, 1, 9, 2**53 - 1)
        + bytes([0x08])
        + _u(1)
        + _s("shots")
        + _u(1)
        + b"\x7d\x01"
        + no_deletes,
        # Zero-length structs.
        _u(1, 2, 9, 0)
        + bytes([0x01])
        + _u(1)
        + _s("shots")
        + _u(0)
        + bytes([0x04])
        + _u(1)
        + _s("notes")
        + _s("")
        + no_deletes,
        # Unsorted, overlapping delete set for a client nobody has.
        _u(0, 1, 12345, 3, 10, 5, 0, 20, 2, 4),
        # A delete set that deletes the base document's items out of order.
        _u(0, 1, 3, 2, 4, 1, 0, 3),
        # Huge counts that are not there.
        _u(2**40) + _u(1, 9, 0),
        _u(1, 2**40, 9, 0) + bytes([0x08]) + _u(1) + _s("shots") + _u(1) + b"\x7e",
        # A varuint of 10 bytes (past 64 bits) and one of 9.
        b"\x01" + b"\xff" * 9 + b"\x01" + _u(9, 0),
        _u(1, 1) + b"\xff" * 8 + b"\x7f" + _u(0) + b"\x08" + _u(1) + _s("shots") + _u(1) + b"\x7e",
        # A content kind yrs does not have, and an unknown type ref.
        _u(1, 1, 9, 0) + bytes([0x0F]) + _u(1) + _s("shots") + no_deletes,
        _u(1, 1, 9, 0) + bytes([0x07]) + _u(1) + _s("shots") + _u(42) + no_deletes,
        b"",
        b"\x00",
        b"\x00\x00",
    ]


REAL = _real_updates()
SHAPES = _shapes()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL + SHAPES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "varint", "splice"]))
        if how == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif how == "truncate":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif how == "varint":
            data[at:at] = b"\xff" * draw(st.integers(8, 10)) + b"\x01"
        else:
            piece = draw(st.sampled_from(REAL))
            start = draw(st.integers(0, len(piece)))
            data[at:at] = piece[start : start + draw(st.integers(1, 16))]
    return bytes(data)


async def _send(live: LiveRoom, update: bytes, by_socket: bool) -> bool:
    """Offer one update; return whether it was accepted. Checks that a refusal changed
    nothing, and that nothing but MalformedUpdate comes out of the room."""
    room = live.room
    before, pending = room.doc.get_update(), live.update_log.pending
    try:
        if by_socket:
            sender, bystander = memory_connection("fuzzer"), memory_connection("bystander")
            room.join(sender)
            room.join(bystander)
            room.receive(sender, sync_update(update))
            await drained(sender)
            accepted = sender.open
            if not accepted:
                assert sender.close_code == 4400
                assert bystander.open  # only the sender is closed
            room.leave(sender)
            room.leave(bystander)
            bystander.close(1000, "bye")
        else:
            try:
                room.apply_update(update, CLIENT)
                accepted = True
            except MalformedUpdate:
                accepted = False
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a PanicException is one
        pytest.fail(f"{type(exc).__name__} escaped the room: {exc!r}")
    if not accepted:
        assert room.doc.get_update() == before, "a refused update changed the live document"
        assert live.update_log.pending == pending, "a refused update was stored"
    assert not room.closing, "the room failed"
    return accepted


class _Errors(logging.Handler):
    """Errors logged by the server code (the repair observers log instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _fuzz(updates: list[tuple[bytes, bool]]) -> None:
    errors = _Errors()
    logging.getLogger("sync").addHandler(errors)
    try:
        await _fuzz_room(updates)
    finally:
        logging.getLogger("sync").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


async def _fuzz_room(updates: list[tuple[bytes, bool]]) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with live_room(Path(data_dir)) as live:
            live.room.apply_update(base_doc().get_update(), CLIENT)
            for update, by_socket in updates:
                await _send(live, update, by_socket)
            # The room still works, and what it stored rebuilds exactly what it shows.
            agent = Doc(client_id=4242)
            agent.apply_update(live.room.doc.get_update())
            agent.get("shots", type=Map)["S2"] = Map({"title": "after the storm"})
            live.room.apply_update(agent.get_update(live.room.doc.get_state()), CLIENT)
            shown = doc_to_json(live.room.doc)
            assert shown["shots"]["S2"] == {"title": "after the storm"}
            reloaded = await live.reload()
            assert doc_to_json(reloaded.doc) == shown


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(updates=st.lists(st.tuples(mutated(), st.booleans()), min_size=1, max_size=8))
def test_malformed_updates_change_nothing_and_crash_nothing(
    updates: list[tuple[bytes, bool]],
) -> None:
    asyncio.run(_fuzz(updates))


@pytest.mark.parametrize("by_socket", [False, True], ids=["http", "socket"])
@pytest.mark.parametrize("name", REGRESSIONS)
async def test_kept_crashers_are_refused_cleanly(
    name: str, by_socket: bool, tmp_path: Path
) -> None:
    async with live_room(tmp_path) as live:
        live.room.apply_update(base_doc().get_update(), CLIENT)
        assert not await _send(live, REGRESSIONS[name], by_socket)


def test_the_kept_crashers_are_real() -> None:
    """Each one panics yrs or leaves a plain Doc part-modified (why the shadow exists)."""
    assert REGRESSIONS
    for name, update in REGRESSIONS.items():
        doc = base_doc()
        before = doc.get_update()
        with pytest.raises(BaseException) as caught:  # PanicException is no Exception
            doc.apply_update(update)
        kind = type(caught.value).__name__
        assert kind == "PanicException" or doc.get_update() != before, name


@pytest.mark.parametrize("shape", range(len(SHAPES)))
async def test_y_octo_shapes(shape: int, tmp_path: Path) -> None:
    async with live_room(tmp_path) as live:
        live.room.apply_update(base_doc().get_update(), CLIENT)
        for by_socket in (False, True):
            await _send(live, SHAPES[shape], by_socket)


async def test_structs_past_a_gap_are_stored_as_sent(tmp_path: Path) -> None:
    """Found by the fuzzer: client 3's struct at clock 25 when the document has its
    clocks up to 8. yrs shows it, but its transaction update is empty; the room stores
    the update as sent, so a reload rebuilds what was shown (and repaired)."""
    past_a_gap = (
        b"\x01\x01\x03\x19(\x01\x05tasks\x02T1\x01v\x02\x07attemptw\x012\x04kindw\x06render\x00"
    )
    async with live_room(tmp_path) as live:
        live.room.apply_update(base_doc().get_update(), CLIENT)
        assert await _send(live, past_a_gap, by_socket=False)
        shown = doc_to_json(live.room.doc)
        assert shown["tasks"] == {"T1": {"kind": "render", "attempt": 2.0}}
        assert isinstance(live.room.doc.get("tasks", type=Map)["T1"], Map)  # repaired
        assert doc_to_json((await live.reload()).doc) == shown
