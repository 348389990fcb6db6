"""Checking an incoming update before it touches the live document.

yrs can reject an update part-way, leaving a Doc partly modified, or panic
(`PanicException` is a BaseException, see `blackboard.persistence.yrs_guard`). So every update is
first applied to a shadow Doc that mirrors the live one; only if that succeeds does it
go to the live Doc. On failure the shadow is rebuilt from the live Doc, which the bad
update never touched.
"""

from __future__ import annotations

from pycrdt import Doc, TransactionEvent, get_state, get_update

from blackboard.persistence.yrs_guard import YrsError, apply_update, yrs_guard
from blackboard.sync.wire.yjs_encoding import decode_state_vector, structless_delete_ranges


class MalformedUpdate(ValueError):
    """The update does not decode or apply."""


class ShadowValidator:
    def __init__(self, live: Doc, shadow: Doc | None = None) -> None:
        """`shadow`: a copy of `live` built alongside it (a room's load), if at hand:
        copying a big document holds the GIL (20 MB: 0.2 s)."""
        self._live = live
        self._shadow = shadow if shadow is not None else self._copy(live)

    @staticmethod
    def _copy(doc: Doc) -> Doc:
        shadow = Doc()
        shadow.apply_update(doc.get_update())
        return shadow

    def check(self, update: bytes) -> None:
        """Apply `update` to the shadow; raise MalformedUpdate if it fails."""
        try:
            with yrs_guard:
                apply_update(self._shadow, update)
        except YrsError as exc:
            # yrs decodes an update whole before applying any of it: bytes that do not
            # decode left the shadow untouched and cost no rebuild (a copy of the whole
            # document). Asked only here, off the path of every valid update.
            if _decodes(update):
                self._shadow = self._copy(self._live)
            raise MalformedUpdate(f"update does not apply: {exc.kind}: {exc}") from None

    def would_change(self, update: bytes) -> bool:
        """Whether `update` would change the document; the live Doc is never touched.

        Taking out the structs the document already has leaves new structs (a write) or
        only a delete set. Deleting items the document does not have yet is a write too
        (yrs would keep it pending). Only a delete set of known items is tried on the
        shadow; if that changed it, the shadow is rebuilt from the live Doc.
        Raises MalformedUpdate if the update does not decode.
        """
        try:
            with yrs_guard:
                known_state = self._shadow.get_state()
                deletions = structless_delete_ranges(get_update(update, known_state))
                known = decode_state_vector(known_state)
        except YrsError as exc:
            raise MalformedUpdate(f"update does not decode: {exc}") from None
        if deletions is None or any(r.end > known.get(r.client, 0) for r in deletions):
            return True
        if not deletions:
            return False
        changed: list[TransactionEvent] = []
        shadow = self._shadow
        subscription = shadow.observe(changed.append)
        try:
            self.check(update)
        finally:
            shadow.unobserve(subscription)
        if changed:
            self._shadow = self._copy(self._live)
        return bool(changed)

    def track(self, update: bytes) -> None:
        """Mirror an update that reached the live doc by another path (server writes)."""
        apply_update(self._shadow, update)


def _decodes(update: bytes) -> bool:
    try:
        with yrs_guard:
            get_state(update)
    except YrsError:
        return False
    return True
