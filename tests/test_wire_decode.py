"""Decoding a frame: the fast path for sync messages reads what the general one would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.sync.wire.protocol import (
    ProtocolError,
    SyncMessage,
    SyncType,
    decode_message,
    encode_varbytes,
)


@given(st.sampled_from(list(SyncType)), st.binary(max_size=300))
def test_sync_frames_read_the_same_with_minimal_or_padded_varuints(
    kind: SyncType, payload: bytes
) -> None:
    body = encode_varbytes(payload)
    minimal = bytes((0, kind)) + body
    padded = bytes((0x80, 0x00, 0x80 | kind, 0x00)) + body  # the same numbers, longer
    assert decode_message(minimal) == decode_message(padded) == SyncMessage(kind, payload)


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
