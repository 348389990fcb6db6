"""The one description of a project document (DESIGN.md section 1).

The JSON views, the validator and the repair rules (`sync.rules.repair`) all read this module;
nothing else spells out root names, field types, lattices or who may write what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# The actor of the server's own writes (repairs, mirrors, expiries) in the log and the
# ledger; instances trust each other's writes under it, so no client may claim it.
SERVER_ACTOR = "server"


class Kind(Enum):
    """The type a field must hold. `null` is allowed in every field (it means unset)."""

    TEXT = "text"  # a string
    NUMBER = "number"  # a JSON number (pycrdt reads numbers back as floats)
    ARRAY = "array"  # a shared Array
    MAP = "map"  # a shared Map
    ANY = "any"  # any JSON value (task `result`)


@dataclass(frozen=True)
class Lattice:
    """A status that only moves up: the merge of two values is the higher one.

    `order` runs from the bottom up. A value not in it ranks below all of them. With an
    `epoch_field` (task `attempt`, shot `revision`), the order applies within one epoch
    and a higher epoch wins outright: a retry (a rework) restarts the status from
    `order[0]`. An entry with no epoch written is at epoch 0.
    """

    field: str
    order: tuple[str, ...]
    epoch_field: str | None = None

    @property
    def bottom(self) -> str:
        return self.order[0]

    @cached_property  # read for every change of an entry
    def fields(self) -> frozenset[str]:
        """The entry fields the lattice decides (the status, and its epoch if any)."""
        return frozenset(f for f in (self.field, self.epoch_field) if f is not None)

    def rank(self, value: object) -> int:
        return self.order.index(value) if value in self.order else -1

    def join(self, a: str | None, b: str | None) -> str | None:
        """The higher of two values; the same whatever the argument order."""
        if a is None or b is None:
            return b if a is None else a
        ra, rb = self.rank(a), self.rank(b)
        if ra != rb:
            return a if ra > rb else b
        return max(a, b)  # two unknown values: any fixed choice will do


@dataclass(frozen=True)
class Root:
    """A root shared type of the document."""

    name: str
    # Fields of each entry, for id-keyed roots (entries are nested Maps), or of the
    # root itself for `spec` and `budget`. Unknown extra fields are kept.
    fields: dict[str, Kind]
    keyed_by_id: bool
    lattice: Lattice | None = None
    server_only: bool = False  # the whole root is written by the server alone
    # Fields of each entry that only the server writes (mirrors of its own decisions).
    server_fields: frozenset[str] = frozenset()


TASK_STATUS = Lattice(
    "status", ("pending", "claimed", "running", "done", "failed"), epoch_field="attempt"
)
# `rejected` may replace `review` only: it sits right above it, below `approved`. A
# rejected shot is reworked under a higher `revision`, which restarts it at `draft`.
SHOT_STATUS = Lattice(
    "status",
    ("draft", "planned", "generating", "review", "rejected", "approved"),
    epoch_field="revision",
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
            "revision": N,
            "assignee": T,
            "notes": T,
        },
        keyed_by_id=True,
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
        lattice=TASK_STATUS,
        server_fields=frozenset({"lease_holder", "lease_expires_at"}),
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
