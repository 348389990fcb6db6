"""A fresh joiner's answer for a big document without encoding it again on the loop.

Encoding a 20 MB document holds the GIL for 40-200 ms, stalling every room of the
process, and the step-2 cache (`step2_cache`) loses its encoding on any change. This
keeps the document's encoding as of some moment (the load's, or the last one made for a
fresh joiner) and answers with what changed since, `Doc.get_update(state vector then)`
(a few ms: it reads only the newer structs and the delete set), then that encoding.
The changes go first: a Yjs or yrs Doc keeps them aside until the encoding brings what
they build on, so when the joiner's step 2 arrives it holds the whole document, as with
a fresh encoding.
"""

from __future__ import annotations

from pycrdt import Doc

from blackboard.sync.wire.protocol import sync_update

# Below this an encoding costs a few ms: the step-2 cache alone serves.
MIN_BYTES = 256 * 1024
# Once the changes since outgrow this share of the encoding, the next fresh joiner gets a
# new encoding, which becomes the base: the full encode is paid once per that much change.
CHANGES_SHARE = 4


class FreshJoinReply:
    """The frames that bring an empty Doc to `doc`'s state, kept across changes."""

    def __init__(self, doc: Doc) -> None:
        self._doc = doc
        self._step2: bytes | None = None  # the base: a SyncStep2 of the whole document
        self._state_vector = b""  # the document's state vector when the base was taken
        self._frames: list[bytes] | None = None  # the answer, until the next change

    def reset(self, step2: bytes) -> None:
        """`step2` frames the document's encoding as of now."""
        if len(step2) < MIN_BYTES:
            self._step2 = self._frames = None
            return
        self._step2, self._state_vector = step2, self._doc.get_state()
        self._frames = [step2]

    def changed(self) -> None:
        self._frames = None

    def frames(self) -> list[bytes] | None:
        """The changes since the base, then the base; None when there is no base or the
        changes have outgrown it (encode the document instead, and `reset`)."""
        if self._step2 is None:
            return None
        if self._frames is None:
            since = sync_update(self._doc.get_update(self._state_vector))
            if len(since) * CHANGES_SHARE > len(self._step2):
                return None
            self._frames = [since, self._step2]
        return self._frames
