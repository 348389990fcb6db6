"""How often repairs may be needed: per sender connection, and per path for peer checks."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from dataclasses import dataclass

from blackboard.sync.room.connection import Connection
from blackboard.sync.rules.correction import Correction, Path
from blackboard.sync.wire import close_codes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairPolicy:
    """A client whose edits keep needing repairs (say, fighting the server in a loop) is
    closed once it passes `max_repaired_updates` within `window_s`. A path that checks of
    other instances' updates keep repairing (instances that disagree would fight without
    end) is left alone past the same bound, with an error logged."""

    max_repaired_updates: int = 100
    window_s: float = 10.0
    # Another instance's update is checked here only after a delay: the instance that
    # accepted it repaired it at once, and its repair is on the way. A break that only
    # the two updates together make is repaired first by the instance that accepted the
    # write the entry shows (`owner_delay_s`); the others wait longer, and find it done.
    owner_delay_s: float = 0.05
    peer_delay_s: float = 0.5


class RepairLimit:
    """Counts repairs within the policy's window: a connection's updates that needed one
    (the connection is closed past the bound) and each path's repairs after peer updates
    (left alone past it)."""

    def __init__(self, policy: RepairPolicy) -> None:
        self._policy = policy
        self._by_connection: weakref.WeakKeyDictionary[Connection, deque[float]] = (
            weakref.WeakKeyDictionary()
        )
        self._by_path: dict[Path, deque[float]] = {}  # repairs by deferred checks

    def count(self, connection: Connection) -> None:
        """An update of `connection` needed repairs; closes it if that passes the bound."""
        if self._over_limit(self._by_connection.setdefault(connection, deque())):
            connection.close(
                close_codes.RATE_LIMITED,
                f"more than {self._policy.max_repaired_updates} edits needed repairs"
                f" within {self._policy.window_s:g} s",
            )

    def allowed(self, corrections: list[Correction]) -> list[Correction]:
        """The repairs of a deferred check, without those of paths past the bound."""
        for path in [p for p, times in self._by_path.items() if not self._recent(times)]:
            del self._by_path[path]
        allowed = []
        for correction in corrections:
            times = self._by_path.setdefault(correction.path, deque())
            if self._over_limit(times):
                log.error(
                    "repair: %s repaired over %d times within %g s after other instances'"
                    " updates; left alone (do the instances disagree?)",
                    correction.path_text,
                    self._policy.max_repaired_updates,
                    self._policy.window_s,
                )
            else:
                allowed.append(correction)
        return allowed

    def _recent(self, times: deque[float]) -> deque[float]:
        """`times` without those before the window."""
        start = asyncio.get_running_loop().time() - self._policy.window_s
        while times and times[0] < start:
            times.popleft()
        return times

    def _over_limit(self, times: deque[float]) -> bool:
        """Count one more repair in `times`; whether that passes the bound."""
        times.append(asyncio.get_running_loop().time())
        return len(self._recent(times)) > self._policy.max_repaired_updates
