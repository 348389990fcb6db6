"""Checking an incoming update before it touches the live document.

yrs can reject an update part-way, leaving a Doc partly modified, or panic
(`PanicException` is a BaseException). So every update is first applied to a shadow Doc
that mirrors the live one; only if that succeeds does it go to the live Doc. On failure
the shadow is rebuilt from the live Doc, which the bad update never touched.
"""

from __future__ import annotations

from pycrdt import Doc


class MalformedUpdate(ValueError):
    """The update does not decode or apply."""


class ShadowValidator:
    def __init__(self, live: Doc) -> None:
        self._live = live
        self._shadow = self._copy(live)

    @staticmethod
    def _copy(doc: Doc) -> Doc:
        shadow = Doc()
        shadow.apply_update(doc.get_update())
        return shadow

    def check(self, update: bytes) -> None:
        """Apply `update` to the shadow; raise MalformedUpdate if it fails."""
        try:
            self._shadow.apply_update(update)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._shadow = self._copy(self._live)
            raise MalformedUpdate(f"update does not apply: {type(exc).__name__}: {exc}") from None

    def track(self, update: bytes) -> None:
        """Mirror an update that reached the live doc by another path (server writes)."""
        self._shadow.apply_update(update)
