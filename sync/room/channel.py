"""The transport a connection speaks through, kept apart from rooms (as pycrdt's Channel)."""

from __future__ import annotations

from typing import Protocol


class Channel(Protocol):
    async def send(self, data: bytes) -> None:
        """Send one binary frame; may raise if the peer is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and a reason; never raises."""
