"""The values only the server writes, as it last wrote them (here or on another instance)."""

from __future__ import annotations

from typing import Any

from blackboard.schemas.document import ROOTS, Root
from blackboard.sync.rules.correction import Path
from blackboard.sync.rules.document_reader import MISSING, DocumentReader
from blackboard.sync.rules.field_rules import json_value


class ServerTruth:
    """The server's last value of each `budget` key and each task lease field, by path:
    (budget, key) or (tasks, entry, lease field); what a client writes there goes back."""

    def __init__(self, reader: DocumentReader) -> None:
        """Start from what the document holds (loaded: the server's own writes)."""
        self._reader = reader
        self._values: dict[Path, Any] = {}
        for root in ROOTS:
            if not (root.server_only or root.server_fields):
                continue
            content = reader.roots[root.name].to_py() or {}  # one read for the whole root
            for key, value in content.items():
                if root.server_only:
                    self._values[(root.name, key)] = json_value(value)
                elif isinstance(value, dict):
                    for name in root.server_fields & value.keys():
                        self._values[(root.name, key, name)] = json_value(value[name])

    def get(self, path: Path) -> Any:
        """The server's last value at `path` (`MISSING` if it never wrote one)."""
        return self._values.get(path, MISSING)

    def learn(self, root: Root, path: Path) -> None:
        """The server (here or on another instance) wrote `path`: the true value."""
        if root.server_only:
            self._remember(path[:2])
        elif root.server_fields and len(path) == 3 and path[2] in root.server_fields:
            self._remember(path)
        elif root.server_fields and len(path) == 2:  # a whole entry written
            for name in root.server_fields:
                self._remember((*path, name))

    def _remember(self, path: Path) -> None:
        value = self._reader.value_at(path)
        if value is MISSING:
            self._values.pop(path, None)
        else:
            self._values[path] = json_value(value)
