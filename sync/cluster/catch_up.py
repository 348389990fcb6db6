"""Catching up from the log, the truth: the rows a room does not have yet (Redis lost
them, or was down), read after its position `log_seq`. Rows it has already (its own
commits, updates Redis brought) are not applied again; reading them is what confirms
that a Redis-delivered update was stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from blackboard.persistence.records import LogEntry
from blackboard.persistence.store import Store
from blackboard.sync.cluster.room_link import RoomLink, RoomLinks
from blackboard.sync.room.origin import SERVER_ACTOR
from blackboard.sync.rules.validation import MalformedUpdate

log = logging.getLogger(__name__)

READ_PAGE = 500
READ_TIMEOUT_S = 30.0


class CatchUp:
    def __init__(self, store: Store, links: RoomLinks) -> None:
        self.store = store
        self.links = links
        self.caught_up = 0  # log rows applied that Redis had not delivered

    def read_log(self, link: RoomLink) -> asyncio.Task[None]:
        """Catch up from the log (one reader per room; a request while it runs makes it
        read once more, since the rows asked for may have committed after its query)."""
        if link.reading is not None and not link.reading.done():
            link.read_again = True
            return link.reading
        link.reading = asyncio.create_task(self._read_until_current(link))
        return link.reading

    async def follow(self, interval_s: Callable[[], float]) -> None:
        """Every `interval_s()`, catch up the rooms whose project's log went past them."""
        while True:
            await asyncio.sleep(interval_s())
            try:
                await self._read_behind()
            except Exception as exc:
                log.warning("log check failed: %s", exc)

    async def _read_until_current(self, link: RoomLink) -> None:
        while True:
            link.read_again = False
            try:
                await self._read_rows(link)
            except Exception as exc:  # the database is down: the next check retries
                log.warning(
                    "room %s: catch-up failed: %s", link.room.project_id, exc, extra=link.log_ids
                )
                return
            if not link.read_again:
                return

    async def _read_rows(self, link: RoomLink) -> None:
        room = link.room
        while self.links.current(link) and not room.closing:
            rows = await asyncio.wait_for(
                self.store.read_log(room.project_id, link.log_seq, READ_PAGE), READ_TIMEOUT_S
            )
            if not rows:
                return
            if rows[0].seq != link.log_seq + 1:
                await self._read_snapshot(link)  # the log was pruned past our position
                continue
            for row in rows:
                self._take_row(link, row)
            link.log_seq = rows[-1].seq
            room.seq = max(room.seq, link.log_seq)
            link.own_seqs = {seq for seq in link.own_seqs if seq > link.log_seq}
            if len(rows) < READ_PAGE:
                return

    async def _read_snapshot(self, link: RoomLink) -> None:
        stored = await asyncio.wait_for(self.store.load(link.room.project_id), READ_TIMEOUT_S)
        if stored.snapshot is not None:
            # A snapshot is stored state: what it shows of server-only fields is the truth.
            what = f"snapshot {stored.snapshot.upto_seq}"
            self._apply_stored(link, stored.snapshot.state, SERVER_ACTOR, what)
        for row in stored.tail:
            self._take_row(link, row)
        link.log_seq = max(link.log_seq, stored.seq)

    def _take_row(self, link: RoomLink, row: LogEntry) -> None:
        if row.seq in link.own_seqs:
            return
        if link.unconfirmed.pop(row.update, None) is not None:
            return  # Redis brought it already; now we know it is stored
        link.remember_logged(row.update)
        if self._apply_stored(link, row.update, row.actor, f"log row {row.seq}"):
            self.caught_up += 1

    def _apply_stored(self, link: RoomLink, update: bytes, actor: str, what: str) -> bool:
        try:
            link.room.apply_peer_update(update, actor)
        except MalformedUpdate as exc:
            project_id = link.room.project_id
            log.error("room %s: %s does not apply: %s", project_id, what, exc, extra=link.log_ids)
            return False
        return True

    async def _read_behind(self) -> None:
        """Catch up every room whose project has log rows past its position."""
        links = list(self.links.values())
        if not links:
            return
        latest = await asyncio.wait_for(
            self.store.latest_seqs([link.room.project_id for link in links]), READ_TIMEOUT_S
        )
        readers = [
            self.read_log(link)
            for link in links
            if latest.get(link.room.project_id, 0) > link.log_seq
        ]
        if readers:
            await asyncio.wait(readers, timeout=READ_TIMEOUT_S)
