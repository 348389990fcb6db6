"""The document rules: which repairs the changed paths and lattice entries call for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, Map

from blackboard.schemas.document import ROOTS_BY_NAME, Root, is_valid_id
from blackboard.schemas.views import finite_json, holds_non_finite
from blackboard.sync.rules.correction import (
    BAD_ID,
    LATTICE,
    NON_FINITE,
    PLAIN_ENTRY,
    SERVER_ONLY,
    WRONG_TYPE,
    Correction,
    Entry,
    Path,
)
from blackboard.sync.rules.document_reader import MISSING, DocumentReader
from blackboard.sync.rules.field_rules import conform, json_value
from blackboard.sync.rules.lattice import LatticeTracker
from blackboard.sync.rules.server_truth import ServerTruth


@dataclass
class _Check:
    """One check: how to judge what it reads, and the repairs found so far by path."""

    peer: bool  # of another instance's update: its server-only values are its own
    non_finite: bool  # the update may carry NaN/Infinity: look for it in every value
    fixes: dict[Path, Correction] = field(default_factory=dict)


class RuleChecks:
    """Reads the document where it changed and lists the repairs the rules call for:
    server-only values, field kinds, plain entries, entry ids, lattice maxima, NaN."""

    def __init__(self, reader: DocumentReader, truth: ServerTruth, lattice: LatticeTracker) -> None:
        self._reader = reader
        self._truth = truth
        self._lattice = lattice

    def check(
        self, touched: list[Path], entries: list[Entry], *, peer: bool, non_finite: bool
    ) -> list[Correction]:
        """The repairs `touched` paths and lattice `entries` call for (possibly none)."""
        checked = [
            path for path in touched if non_finite or _has_rule(ROOTS_BY_NAME[path[0]], path)
        ]
        if not checked and not entries:
            return []  # e.g. extra fields, which no rule covers: nothing to read
        run = _Check(peer, non_finite)
        lattice_entries = dict.fromkeys(entries)
        with self._reader.reading():  # one transaction for every read
            for path in checked:
                root = ROOTS_BY_NAME[path[0]]
                if len(path) == 2 and root.keyed_by_id:
                    self._check_entry(root, path[1], run)
                else:
                    self._check_field(root, path, run)
                if root.lattice and (len(path) == 2 or path[2] in root.lattice.fields):
                    lattice_entries[(root.name, path[1])] = None
            for root_name, key in lattice_entries:
                self._check_lattice(ROOTS_BY_NAME[root_name], key, run.fixes)
        return list(run.fixes.values())

    def _check_entry(self, root: Root, key: str, run: _Check) -> None:
        path = (root.name, key)
        value = self._reader.value_at(path)
        if value is MISSING:
            return
        if not is_valid_id(key):
            run.fixes[path] = Correction(path, BAD_ID, json_value(value), None)
        elif isinstance(value, dict):
            self._convert_entry(root, path, value, run)
        elif not isinstance(value, Map):
            run.fixes[path] = Correction(path, WRONG_TYPE, json_value(value), None)
        else:
            for name in sorted(set(value.keys()) | root.server_fields):
                self._check_field(root, (*path, name), run)

    def _convert_entry(self, root: Root, path: Path, value: dict[str, Any], run: _Check) -> None:
        """A plain object becomes a Map with its fields (themselves repaired)."""
        fields = dict(value)
        field_fixes = []
        for name in sorted(set(fields) | root.server_fields):
            fix = self._field_fix(root, (*path, name), fields.get(name, MISSING), run)
            if fix is None:
                continue
            field_fixes.append(fix)
            if fix.after is None:
                fields.pop(name, None)
            else:
                fields[name] = fix.after
        run.fixes[path] = Correction(path, PLAIN_ENTRY, json_value(value), json_value(fields))
        for fix in field_fixes:  # recorded; the entry's new Map already holds them
            run.fixes[fix.path] = Correction(fix.path, fix.rule, fix.before, fix.after, write=False)

    def _check_field(self, root: Root, path: Path, run: _Check) -> None:
        if len(path) == 3 and not isinstance(self._reader.value_at(path[:2]), Map):
            return  # the entry itself is checked (or gone)
        fix = self._field_fix(root, path, self._reader.value_at(path), run)
        if fix is not None:
            run.fixes[path] = fix

    def _field_fix(self, root: Root, path: Path, value: Any, run: _Check) -> Correction | None:
        name = path[-1]
        if root.server_only or name in root.server_fields:
            if run.peer:
                return None  # another instance's value: it checked its own clients
            truth = self._truth.get(path)
            if truth is MISSING and value is MISSING:
                return None
            shown = None if value is MISSING else json_value(value)
            if truth is not MISSING and value is not MISSING and shown == truth:
                return None
            return Correction(path, SERVER_ONLY, shown, None if truth is MISSING else truth)
        if value is MISSING:
            return None
        kind = root.fields.get(name)
        shown, rule = value, WRONG_TYPE
        if run.non_finite:
            plain = value.to_py() if isinstance(value, Map | Array) else value
            if holds_non_finite(plain):
                shown, rule = finite_json(plain), NON_FINITE
        fix = None if kind is None else conform(kind, shown)
        if fix is None and rule is WRONG_TYPE:
            return None
        after = shown if fix is None else fix.value
        return Correction(path, rule, json_value(value), json_value(after))

    def _check_lattice(self, root: Root, key: str, fixes: dict[Path, Correction]) -> None:
        lattice = root.lattice
        assert lattice is not None
        target = self._lattice.target(root.name, key)
        if target is None or not is_valid_id(key):
            return
        entry = self._reader.value_at((root.name, key))
        if not isinstance(entry, Map):
            return
        status = _present(self._reader.value_at((root.name, key, lattice.field)))
        rewrite = target.status is not None and (status != target.status or target.stale)
        if target.epoch is not None and lattice.epoch_field:
            shown = _present(self._reader.value_at((root.name, key, lattice.epoch_field)))
            wrong = _epoch(shown) != target.epoch or (shown is not None and not _is_number(shown))
            # Other instances count a status for the epoch written with it, else for that
            # of the status it overwrote: a status written over one of another epoch (or
            # over none) takes the epoch along, or they would count it for another one.
            if wrong or (rewrite and target.stale):
                path = (root.name, key, lattice.epoch_field)
                fixes[path] = Correction(
                    path, LATTICE, json_value(shown), target.epoch, record=wrong
                )
        if rewrite:
            path = (root.name, key, lattice.field)
            changed = status != target.status
            fixes[path] = Correction(
                path, LATTICE, json_value(status), target.status, record=changed
            )


def _has_rule(root: Root, path: Path) -> bool:
    """Whether a change at `path` can break a rule: a whole entry, or a field with a
    kind or written by the server alone (unknown extra fields are kept as they are)."""
    if len(path) == 2 and root.keyed_by_id:
        return True
    name = path[-1]
    return root.server_only or name in root.fields or name in root.server_fields


def _present(value: Any) -> Any:
    return None if value is MISSING else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _epoch(value: Any) -> float:
    return float(value) if _is_number(value) else 0.0
