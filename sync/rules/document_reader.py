"""Reading values at paths of a live document, each path once within a check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pycrdt import Doc, Map

from blackboard.schemas.document import ROOTS
from blackboard.sync.rules.correction import Path

MISSING: Any = object()  # what `value_at` returns where there is no value


class DocumentReader:
    """The roots of one live document and the value at a path of them."""

    def __init__(self, doc: Doc) -> None:
        self._doc = doc
        self.roots: dict[str, Map] = {root.name: doc.get(root.name, type=Map) for root in ROOTS}
        self._cached = False
        self._reads: dict[Path, Any] = {}  # values read within `reading`

    def value_at(self, path: Path) -> Any:
        """The value at `path` (`MISSING` if none); read once within `reading`."""
        value = self._reads.get(path, MISSING)
        if value is MISSING:
            parent = self.roots[path[0]] if len(path) == 2 else self.value_at(path[:-1])
            value = _get(parent, path[-1])
            if self._cached:
                self._reads[path] = value
        return value

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One transaction for every read inside, each path read once."""
        with self._doc.transaction():
            self._cached = True
            try:
                yield
            finally:
                self._cached = False
                self._reads.clear()


def _get(container: Any, key: str) -> Any:
    """`container[key]` if `container` is a Map holding `key` (one read, not two)."""
    if not isinstance(container, Map):
        return MISSING
    try:
        return container[key]
    except KeyError:
        return MISSING
