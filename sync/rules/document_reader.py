"""Reading values at paths of a live document, each path once within a check."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from pycrdt import Doc, Map, Transaction

from blackboard.schemas.document import ROOTS
from blackboard.sync.rules.correction import Path

MISSING: Any = object()  # what `value_at` returns where there is no value


class DocumentReader:
    """The roots of one live document and the value at a path of them."""

    def __init__(self, doc: Doc) -> None:
        self._doc = doc
        self.roots: dict[str, Map] = {root.name: doc.get(root.name, type=Map) for root in ROOTS}
        self._txn: Any = None  # the (Rust) transaction of `reading`, while inside it
        self._reads: dict[Path, Any] = {}  # values read within `reading`

    def value_at(self, path: Path) -> Any:
        """The value at `path` (`MISSING` if none); read once within `reading`."""
        value = self._reads.get(path, MISSING)
        if value is MISSING:
            parent = self.roots[path[0]] if len(path) == 2 else self.value_at(path[:-1])
            if self._txn is None:
                value = _get(parent, path[-1])
            else:
                value = self._read(parent, path[-1])
                self._reads[path] = value
        return value

    def reading(self) -> _Reading:
        """One transaction for every read inside, each path read once."""
        return _Reading(self, self._doc.transaction())

    def _read(self, container: Any, key: str) -> Any:
        """`_get` within `reading`: straight from the integrated Map, in the open
        transaction (pycrdt's `map[key]` enters a transaction and checks the key first,
        which cost several times the read itself)."""
        if not isinstance(container, Map):
            return MISSING
        shared = container.integrated
        if not shared.has(self._txn, key):
            return MISSING
        value = shared.get(self._txn, key)
        if isinstance(value, _PLAIN):
            return value
        return container._maybe_as_type_or_doc(value)  # a nested shared type: pycrdt's own


class _Reading:
    """The context of `DocumentReader.reading` (a class: cheaper than a generator)."""

    __slots__ = ("_reader", "_transaction")

    def __init__(self, reader: DocumentReader, transaction: Transaction) -> None:
        self._reader = reader
        self._transaction = transaction

    def __enter__(self) -> None:
        self._reader._txn = self._transaction.__enter__()._txn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._reader._txn = None
        self._reader._reads.clear()
        self._transaction.__exit__(exc_type, exc, traceback)


_PLAIN = (str, int, float, bool, type(None), dict, list)  # JSON values pycrdt hands as is


def _get(container: Any, key: str) -> Any:
    """`container[key]` if `container` is a Map holding `key` (one read, not two)."""
    if not isinstance(container, Map):
        return MISSING
    try:
        return container[key]
    except KeyError:
        return MISSING
