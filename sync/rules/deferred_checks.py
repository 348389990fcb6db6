"""When to check what other instances' updates touched: each path and entry by a due time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TypeVar

from blackboard.sync.rules.correction import Entry, Path
from blackboard.sync.rules.repair_limit import RepairPolicy

_K = TypeVar("_K")


class DeferredChecks:
    """Paths and lattice entries peer updates touched, each with the loop time to check
    it (see `RepairPolicy` for the delays); `next_due` is the earliest of them."""

    def __init__(self, policy: RepairPolicy) -> None:
        self._policy = policy
        self._paths: dict[Path, float] = {}
        self._entries: dict[Entry, float] = {}
        self.next_due: float | None = None  # kept, not searched

    def defer(self, paths: Iterable[Path], entries: Iterable[tuple[Entry, bool]]) -> None:
        """Check `paths` after the peer delay, and each entry after the owner's delay if
        this instance accepted the write it shows (`owned`), else after the peer delay."""
        now = asyncio.get_running_loop().time()
        for path in paths:
            self._check_by(self._paths, path, now + self._policy.peer_delay_s)
        for entry, owned in entries:
            delay = self._policy.owner_delay_s if owned else self._policy.peer_delay_s
            self._check_by(self._entries, entry, now + delay)

    def take_due(self) -> tuple[list[Path], list[Entry]]:
        """The paths and entries whose check is due now (no longer deferred)."""
        now = asyncio.get_running_loop().time()
        paths = _take_due(self._paths, now)
        entries = _take_due(self._entries, now)
        self.next_due = min([*self._paths.values(), *self._entries.values()], default=None)
        return paths, entries

    def _check_by(self, deferred: dict[_K, float], key: _K, due: float) -> None:
        """Check `key` no later than `due` (an earlier time already set stays)."""
        due = deferred[key] = min(deferred.get(key, due), due)
        self.next_due = due if self.next_due is None else min(self.next_due, due)


def _take_due(deferred: dict[_K, float], now: float) -> list[_K]:
    due = [key for key, at in deferred.items() if at <= now]
    for key in due:
        del deferred[key]
    return due
