"""Presence: awareness states relayed between clients, never persisted.

The room remembers each client id's latest state and which connection set it, so a new
client gets a snapshot at its handshake and a closed connection's states are removed and
the removal broadcast at once.

Bounded (`AwarenessLimits`): a state over `state_bytes` is dropped, and so is a new client
id once the room holds `states_per_room`; the room closes a connection that claims more
than `ids_per_connection` ids (a Yjs client has one). A removed id is remembered, as
y-protocols does, so that a late copy of its last state (stock clients echo every change
they receive) does not bring it back; it is forgotten `removed_ttl_s` later, the
y-protocols timeout after which every client has dropped it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from blackboard.sync.wire.protocol import AwarenessEntry


@dataclass(frozen=True)
class AwarenessLimits:
    ids_per_connection: int = 4
    state_bytes: int = 64 * 1024
    states_per_room: int = 10_000
    removed_ttl_s: float = 30.0


class AwarenessStates:
    def __init__(
        self,
        limits: AwarenessLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or AwarenessLimits()
        self._clock = clock
        self._states: dict[int, AwarenessEntry] = {}  # live
        # Removed ids, oldest removal first: (removal entry, when it was removed).
        self._removed: dict[int, tuple[AwarenessEntry, float]] = {}

    def __len__(self) -> int:
        return len(self._states)

    @property
    def removed_count(self) -> int:
        return len(self._removed)

    def is_newer(self, entry: AwarenessEntry) -> bool:
        """Whether `entry` would replace what is known of its client id."""
        known = self._known(entry.client_id)
        return (
            known is None
            or entry.clock > known.clock
            or (entry.clock == known.clock and entry.removed and not known.removed)
        )

    def _known(self, client_id: int) -> AwarenessEntry | None:
        live = self._states.get(client_id)
        if live is not None:
            return live
        removed = self._removed.get(client_id)
        return removed[0] if removed is not None else None

    def apply(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        """Keep the entries newer than what is known and within the limits; return them
        (to relay)."""
        self._forget_removed()
        accepted = []
        for entry in entries:
            if not self.is_newer(entry):
                continue
            if entry.removed:
                if entry.client_id not in self._states:
                    continue  # nothing to remove: an unknown id costs no memory
                del self._states[entry.client_id]
                self._remember_removed(entry)
            elif not self._admits(entry):
                continue
            else:
                self._removed.pop(entry.client_id, None)
                self._states[entry.client_id] = entry
            accepted.append(entry)
        return accepted

    def _admits(self, entry: AwarenessEntry) -> bool:
        if len(entry.state_json.encode()) > self.limits.state_bytes:
            return False
        return entry.client_id in self._states or len(self._states) < self.limits.states_per_room

    def _remember_removed(self, removal: AwarenessEntry) -> None:
        self._removed.pop(removal.client_id, None)  # re-inserted last: newest
        self._removed[removal.client_id] = (removal, self._clock())
        if len(self._removed) > self.limits.states_per_room:
            del self._removed[next(iter(self._removed))]  # forget the oldest early

    def _forget_removed(self) -> None:
        horizon = self._clock() - self.limits.removed_ttl_s
        while self._removed:
            client_id, (_, removed_at) = next(iter(self._removed.items()))
            if removed_at > horizon:
                break
            del self._removed[client_id]

    def snapshot(self) -> list[AwarenessEntry]:
        return list(self._states.values())

    def states(self) -> dict[int, str]:
        return {e.client_id: e.state_json for e in self._states.values()}

    def remove(self, client_ids: set[int]) -> list[AwarenessEntry]:
        """Mark these clients gone; return the removal entries to broadcast."""
        self._forget_removed()
        removals = []
        for client_id in client_ids:
            known = self._states.pop(client_id, None)
            if known is not None:
                removal = AwarenessEntry(client_id, known.clock + 1, "null")
                self._remember_removed(removal)
                removals.append(removal)
        return removals
