"""Presence: awareness states relayed between clients, never persisted.

The room remembers each client id's latest state and which connection set it, so a new
client gets a snapshot at its handshake and a closed connection's states are removed and
the removal broadcast at once.
"""

from __future__ import annotations

from sync.protocol import AwarenessEntry


class AwarenessStates:
    def __init__(self) -> None:
        self._states: dict[int, AwarenessEntry] = {}

    def __len__(self) -> int:
        return sum(1 for entry in self._states.values() if not entry.removed)

    def apply(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        """Keep the entries newer than what is known; return them (to relay)."""
        accepted = []
        for entry in entries:
            known = self._states.get(entry.client_id)
            if (
                known is None
                or entry.clock > known.clock
                or (entry.clock == known.clock and entry.removed and not known.removed)
            ):
                self._states[entry.client_id] = entry
                accepted.append(entry)
        return accepted

    def snapshot(self) -> list[AwarenessEntry]:
        return [entry for entry in self._states.values() if not entry.removed]

    def states(self) -> dict[int, str]:
        return {e.client_id: e.state_json for e in self._states.values() if not e.removed}

    def remove(self, client_ids: set[int]) -> list[AwarenessEntry]:
        """Mark these clients gone; return the removal entries to broadcast."""
        removals = []
        for client_id in client_ids:
            known = self._states.get(client_id)
            if known is not None and not known.removed:
                removal = AwarenessEntry(client_id, known.clock + 1, "null")
                self._states[client_id] = removal
                removals.append(removal)
        return removals
