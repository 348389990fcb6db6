"""Adoption: an update applied from Redis but never seen in the log is its originator's
to store; if the originator died first, this instance stores it (at worst a duplicate,
which replays as a no-op), so it is never only in memory."""

from __future__ import annotations

import asyncio
import logging

from blackboard.persistence.errors import LogFull
from blackboard.persistence.update_log import UpdateLog
from blackboard.sync.cluster.catch_up import CatchUp
from blackboard.sync.cluster.redis_presence import PresenceDirectory
from blackboard.sync.cluster.room_link import Pending, RoomLink

log = logging.getLogger(__name__)


class Adoption:
    def __init__(
        self,
        update_log: UpdateLog,
        presence: PresenceDirectory,
        catch_up: CatchUp,
        *,
        check_s: float,
        max_unconfirmed: int,
    ) -> None:
        self.update_log = update_log
        self.presence = presence
        self.catch_up = catch_up
        self.check_s = check_s
        self.max_unconfirmed = max_unconfirmed
        self.adopted = 0  # updates stored on behalf of a dead instance

    def watch(self, link: RoomLink, update: bytes, pending: Pending) -> None:
        """Wait for the log to show `update`, which came through Redis."""
        link.unconfirmed[update] = pending
        if len(link.unconfirmed) > self.max_unconfirmed:
            # Bounded memory: store the oldest ourselves (at worst a harmless duplicate).
            self.adopt(link, [next(iter(link.unconfirmed))])

    def overdue(self, link: RoomLink) -> list[Pending]:
        """Redis-delivered updates the log should have shown by now."""
        cutoff = asyncio.get_running_loop().time() - 2 * self.check_s
        return [p for p in link.unconfirmed.values() if p.received < cutoff]

    async def adopt_overdue(self, link: RoomLink, alive: set[str]) -> None:
        """Store the overdue updates of instances not `alive`, once the log is read."""
        if any(p.instance not in alive for p in self.overdue(link)):
            await self.catch_up.read_log(link)  # confirm what was stored in the meantime
            self.adopt_orphans(link, alive)

    async def adopt_left(self, link: RoomLink) -> None:
        """A room was unloaded: store what instances that died left unconfirmed."""
        if link.unconfirmed:
            alive = await self.presence.alive(p.instance for p in link.unconfirmed.values())
            self.adopt_orphans(link, alive)

    def adopt_orphans(self, link: RoomLink, alive: set[str]) -> None:
        self.adopt(link, [u for u, p in link.unconfirmed.items() if p.instance not in alive])

    def adopt(self, link: RoomLink, updates: list[bytes]) -> None:
        for update in updates:
            pending = link.unconfirmed.get(update)
            if pending is None:
                continue
            try:
                self.update_log.append(link.room.project_id, update, pending.actor)
            except LogFull as exc:
                project_id = link.room.project_id
                log.warning(
                    "room %s: cannot store a peer's update: %s", project_id, exc, extra=link.log_ids
                )
                return
            del link.unconfirmed[update]
            self.adopted += 1
            log.info(
                "room %s: stored an update of instance %s, which did not",
                link.room.project_id,
                pending.instance,
                extra=link.log_ids,
            )
