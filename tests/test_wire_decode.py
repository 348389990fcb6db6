"""Decoding a frame: the fast path for sync messages reads what the general one would,
and what the fast encoding of an update writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Map

from blackboard.sync.wire import yjs_structs
from blackboard.sync.wire.protocol import (
    ProtocolError,
    SyncMessage,
    SyncType,
    decode_message,
    encode_varbytes,
    sync_update,
)


@given(st.sampled_from(list(SyncType)), st.binary(max_size=300))
def test_sync_frames_read_the_same_with_minimal_or_padded_varuints(
    kind: SyncType, payload: bytes
) -> None:
    body = encode_varbytes(payload)
    minimal = bytes((0, kind)) + body
    padded = bytes((0x80, 0x00, 0x80 | kind, 0x00)) + body  # the same numbers, longer
    assert decode_message(minimal) == decode_message(padded) == SyncMessage(kind, payload)


@given(st.binary(max_size=300))
def test_an_update_frame_is_the_general_encoding(update: bytes) -> None:
    frame = sync_update(update)
    assert frame == bytes((0, SyncType.UPDATE)) + encode_varbytes(update)
    assert decode_message(frame) == SyncMessage(SyncType.UPDATE, update)


@given(st.binary(max_size=40))
def test_any_frame_decodes_or_raises_a_protocol_error(frame: bytes) -> None:
    try:
        decode_message(frame)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "frame",
    [b"\x00", b"\x00\x02", b"\x00\x02\x05ab", b"\x00\x03\x00", b"\x00\x7f\x00"],
)
def test_bad_sync_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(frame)


def _a_write_and_what_it_needs() -> tuple[bytes, bytes]:
    """An editor's write into a shot (held while the author's update is missing), and the
    author's update that adds the shot."""
    author, editor = Doc(client_id=7), Doc(client_id=8)
    author.get("shots", type=Map)["S1"] = Map({"order": 1.0})
    editor.apply_update(author.get_update())
    before = editor.get_state()
    editor.get("shots", type=Map)["S1"]["title"] = "held"
    return editor.get_update(before), author.get_update()


def test_an_update_the_struct_reader_cannot_read_is_judged_by_its_state_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting it held would stop compaction for nothing; yrs's state vector of it still
    tells a held first update of a client (fault injected: every update here reads)."""
    held, integrated = _a_write_and_what_it_needs()
    server = Doc()
    server.apply_update(held)  # kept aside: the author's update is missing
    assert yjs_structs.held_back(server.get_state(), [held]) == [0]

    def unreadable(update: bytes) -> dict[int, int]:
        raise ProtocolError("a content kind this reader does not know")

    monkeypatch.setattr(yjs_structs, "clock_ends", unreadable)
    assert yjs_structs.held_back(server.get_state(), [held]) == [0]
    server.apply_update(integrated)
    assert yjs_structs.held_back(server.get_state(), [integrated, held]) == []


def test_updates_a_document_holds_whole_are_judged_without_reading_their_structs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quick answer (yrs's diff against the state vector) clears every update the
    document holds, a deletion included; only a held one is read struct by struct."""
    author, editor = Doc(client_id=7), Doc(client_id=8)
    updates: list[bytes] = []
    author.observe(lambda event: updates.append(event.update))
    shots = author.get("shots", type=Map)
    for i in range(5):
        shots[f"S{i}"] = Map({"order": float(i)})
    del shots["S0"]
    editor.apply_update(author.get_update())
    before = editor.get_state()
    del editor.get("shots", type=Map)["S1"]  # a delete set naming the author's items
    updates.append(editor.get_update(before))
    server = Doc()
    for update in updates:
        server.apply_update(update)
    read: list[bytes] = []
    clock_ends = yjs_structs.clock_ends

    def reading(update: bytes) -> dict[int, int]:
        read.append(update)
        return clock_ends(update)

    monkeypatch.setattr(yjs_structs, "clock_ends", reading)
    assert yjs_structs.held_back(server.get_state(), updates) == []
    assert read == []
    # Without the author's updates the editor's deletion waits, and is read to tell so.
    alone = Doc()
    alone.apply_update(updates[-1])
    assert yjs_structs.held_back(alone.get_state(), updates[-1:]) == [0]
    assert read == updates[-1:]


def test_an_update_yrs_will_not_diff_is_read_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick answer's failure (fault injected: yrs refuses the diff) costs only its
    speed: the update is read struct by struct, and a held one is still found."""
    held, integrated = _a_write_and_what_it_needs()

    def refusing(update: bytes, state: bytes) -> bytes:
        raise ValueError("yrs refused the diff")

    monkeypatch.setattr(yjs_structs, "get_update", refusing)
    server = Doc()
    server.apply_update(integrated)
    assert yjs_structs.held_back(server.get_state(), [integrated]) == []
    alone = Doc()
    alone.apply_update(held)
    assert yjs_structs.held_back(alone.get_state(), [held]) == [0]
