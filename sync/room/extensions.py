"""The lifecycle of a room, as hooks an extension may implement (Hocuspocus style).

Each concern that is not the core pipeline (metrics, cross-instance fan-out, ...) is an
Extension; the room calls every registered extension in order. Hooks are synchronous and
must not raise: they run on the hot path of every update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from blackboard.sync.room.connection import Connection
    from blackboard.sync.room.origin import Origin
    from blackboard.sync.room.room import Room
    from blackboard.sync.rules.correction import Correction


class Extension:
    def on_loaded(self, room: Room) -> None:
        """The room's document was loaded from storage."""

    def on_update(self, room: Room, update: bytes, origin: Origin) -> None:
        """An update changed the live document (after fan-out to local clients)."""

    def on_committed(self, room: Room, seq: int, size: int) -> None:
        """An update of this room is durable at `seq`."""

    def on_repair(
        self,
        room: Room,
        corrections: list[Correction],
        committed: asyncio.Future[int] | None,
        origin: Origin,
    ) -> None:
        """The server repaired what an update of `origin` broke (blackboard.sync.rules.repair).

        `committed` resolves with the seq of that update (or of the repair itself, when
        the update was not stored here, e.g. from another instance).
        """

    def on_awareness(self, room: Room, payload: bytes, origin: Origin) -> None:
        """An awareness update was accepted and relayed to local clients."""

    def on_join(self, room: Room, connection: Connection) -> None: ...

    def on_leave(self, room: Room, connection: Connection) -> None: ...

    def on_unloaded(self, room: Room) -> None: ...


def implementing(extensions: list[Extension], hook: str) -> list[Callable[..., None]]:
    """The `hook` of each extension that implements it, in order: for the hooks every
    update calls, so that the extensions that leave them empty cost it nothing."""
    default: Any = getattr(Extension, hook)
    return [getattr(ext, hook) for ext in extensions if getattr(type(ext), hook) is not default]
