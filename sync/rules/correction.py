"""One repair as data (`Correction`), the rule names it carries, and writing repairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map

from blackboard.sync.rules.shape import to_shared

SERVER_ONLY = "server_only"
WRONG_TYPE = "wrong_type"
PLAIN_ENTRY = "plain_entry"
BAD_ID = "bad_id"
LATTICE = "lattice"
NON_FINITE = "non_finite"

Path = tuple[str, ...]  # (root, key) or (root, entry, field)
Entry = tuple[str, str]  # (root, entry key) of an entry with a lattice


@dataclass(frozen=True)
class Correction:
    """One repair: the value at `path` went from `before` to `after` (None: removed)."""

    path: Path
    rule: str
    before: Any
    after: Any
    write: bool = True  # False when a repair of the enclosing entry writes it
    record: bool = True  # False for a rewrite of the same value (see lattice.Target)

    @property
    def path_text(self) -> str:
        """`shots/S1/duration_s` (JSON Pointer escaping, so a bad id with `/` reads back)."""
        return "/".join(p.replace("~", "~0").replace("/", "~1") for p in self.path)


def write_corrections(corrections: list[Correction], doc: Doc) -> None:
    """Apply repairs (inside a server transaction); a path that is gone is skipped."""
    for correction in corrections:
        if not correction.write:
            continue
        *parents, last = correction.path
        container: Any = doc.get(parents[0], type=Map)
        for key in parents[1:]:
            container = container.get(key)
            if not isinstance(container, Map):
                break
        else:
            if correction.after is not None:
                container[last] = to_shared(correction.after)
            elif last in container:
                del container[last]
