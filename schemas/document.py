"""The one description of a project document (DESIGN.md section 1).

The JSON views, the validator and the repair rules all read this module; nothing
else spells out root names or field types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class Kind(Enum):
    """The type a field must hold."""

    TEXT = "text"
    NUMBER = "number"
    ARRAY = "array"
    MAP = "map"
    ANY = "any"  # any JSON value (task `result`)


@dataclass(frozen=True)
class Lattice:
    """A status whose value may only move up; `replaces` lists the extra allowed moves."""

    ranks: tuple[str, ...]
    replaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Field whose higher value wins outright, resetting the lattice (task `attempt`).
    epoch_field: str | None = None

    def rank(self, value: object) -> int:
        """The rank of `value`; unknown values rank below everything."""
        if isinstance(value, str) and value in self.ranks:
            return self.ranks.index(value)
        for replacement, replaced in self.replaces.items():
            if value == replacement:
                return max(self.ranks.index(r) for r in replaced)
        return -1

    def join(self, a: object, b: object) -> object:
        """The lattice maximum of two values (deterministic whatever the order)."""
        ra, rb = self.rank(a), self.rank(b)
        if ra != rb:
            return a if ra > rb else b
        # Equal rank: a replacement (e.g. `rejected`) beats what it replaces.
        if a in self.replaces:
            return a
        if b in self.replaces:
            return b
        return a if str(a) >= str(b) else b


@dataclass(frozen=True)
class Root:
    """A root shared type of the document."""

    name: str
    # Fields of each entry, for id-keyed roots (entries are nested Maps), or of the
    # root itself for `spec` and `budget`.
    fields: dict[str, Kind]
    keyed_by_id: bool
    lattice_field: str | None = None
    lattice: Lattice | None = None
    server_only: bool = False


TASK_STATUS = Lattice(
    ranks=("pending", "claimed", "running", "done", "failed"), epoch_field="attempt"
)
SHOT_STATUS = Lattice(
    ranks=("draft", "planned", "generating", "review", "approved"),
    replaces={"rejected": ("review",)},
)

T, N, A, M, ANY = Kind.TEXT, Kind.NUMBER, Kind.ARRAY, Kind.MAP, Kind.ANY

ROOTS: tuple[Root, ...] = (
    Root(
        "spec",
        {"title": T, "logline": T, "aspect_ratio": T, "fps": N, "style": M, "status": T},
        keyed_by_id=False,
    ),
    Root(
        "shots",
        {
            "title": T,
            "scene": T,
            "order": N,
            "description": T,
            "prompt": T,
            "duration_s": N,
            "camera": T,
            "characters": A,
            "artifact_ids": A,
            "status": T,
            "assignee": T,
            "notes": T,
        },
        keyed_by_id=True,
        lattice_field="status",
        lattice=SHOT_STATUS,
    ),
    Root(
        "dna_bank",
        {
            "name": T,
            "description": T,
            "traits": M,
            "reference_artifacts": A,
            "embedding": A,
            "version": N,
        },
        keyed_by_id=True,
    ),
    Root(
        "tasks",
        {
            "kind": T,
            "shot_id": T,
            "status": T,
            "attempt": N,
            "assignee": T,
            "depends_on": A,
            "result": ANY,
            "error": T,
            "cost_estimate": N,
            "updated_at": T,
            "lease_holder": T,
            "lease_expires_at": T,
        },
        keyed_by_id=True,
        lattice_field="status",
        lattice=TASK_STATUS,
    ),
    Root(
        "artifacts",
        {
            "key": T,
            "content_type": T,
            "size": N,
            "sha256": T,
            "shot_id": T,
            "model": T,
            "model_version": T,
            "seed": N,
            "prompt": T,
            "cost": N,
            "created_at": T,
        },
        keyed_by_id=True,
    ),
    Root(
        "approvals",
        {"subject": T, "requested_by": T, "status": T, "decided_by": T, "note": T},
        keyed_by_id=True,
    ),
    Root(
        "budget",
        {
            "total": N,
            "reserved": N,
            "spent": N,
            "available": N,
            "currency": T,
            "version": N,
            "updated_at": T,
        },
        keyed_by_id=False,
        server_only=True,
    ),
)

ROOTS_BY_NAME: dict[str, Root] = {root.name: root for root in ROOTS}
ROOT_NAMES: tuple[str, ...] = tuple(root.name for root in ROOTS)


def is_valid_id(value: str) -> bool:
    """Whether `value` may key an entry of an id-keyed root (or name a project)."""
    return bool(ID_PATTERN.match(value))
