"""The transport a connection speaks through, kept apart from rooms (as pycrdt's Channel)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Channel(Protocol):
    async def send(self, data: bytes) -> None:
        """Send one binary frame; may raise if the peer is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and a reason; never raises."""


@runtime_checkable
class DirectChannel(Channel, Protocol):
    """A channel that can take a frame at once, with no task switch (a socket's writer,
    which coalesces a loop tick's frames into one write): a broadcast to a thousand
    sockets then wakes no task."""

    def offer(self, data: bytes) -> bool:
        """Take one frame now, after those taken before, if the transport can: False
        while it holds a backlog (the caller keeps the frame). Raises if the peer is gone."""
