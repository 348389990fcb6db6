"""Artifacts (DESIGN.md section 9): media bytes in the object store, indexed in the
document's `artifacts` root.

Upload first, index second. A body streams to a staging key (hashed on the way), then
moves to its final key, `projects/{project}/artifacts/{artifact}/{sha256}`, and only
then is the `artifacts/{artifact_id}` entry written with a server origin and committed.
A crash in between leaves an object no entry names (an orphan, which `sweep` removes
once it is older than the grace period), never an entry whose object is missing.

The final key holds the content's hash (`persistence.objects.artifact_keys`), so two uploads
of one id with different bytes never overwrite each other's object: whichever entry is
indexed first wins, the other gets `ArtifactExists` and its object goes. The server
reads from the key it derives, never from a `key` a client edited.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pycrdt import Doc, Map

from blackboard.persistence.clock import to_iso, utc_now
from blackboard.persistence.errors import ProjectNotFound
from blackboard.persistence.objects.artifact_keys import (
    PROJECTS,
    indexed,
    object_key,
    relative_key,
    stored_sha256,
)
from blackboard.persistence.objects.object_store import ObjectStore, ObjectStoreError
from blackboard.persistence.replay import replay
from blackboard.persistence.store import Store
from blackboard.persistence.tasks import cancel_and_wait
from blackboard.sync.room.rooms import RoomManager
from blackboard.sync.rules.shape import to_shared

log = logging.getLogger(__name__)

STAGING = "staging/"
INDEX_TIMEOUT_S = 30.0


class ArtifactExists(Exception):
    def __init__(self, artifact_id: str, entry: dict[str, Any]) -> None:
        super().__init__(f"artifact {artifact_id!r} exists with other bytes")
        self.entry = entry


class NotIndexed(Exception):
    """The object is stored but its entry did not commit in time (it may still)."""


@dataclass(frozen=True)
class Upload:
    status: int  # 201 stored and indexed, 200 the same bytes were there already
    entry: dict[str, Any]


class Artifacts:
    def __init__(
        self,
        objects: ObjectStore,
        store: Store,
        rooms: RoomManager,
        *,
        max_bytes: int,
        orphan_grace_s: float,
    ) -> None:
        self.objects = objects
        self.store = store
        self.rooms = rooms
        self.max_bytes = max_bytes
        self.orphan_grace = timedelta(seconds=orphan_grace_s)
        self._task: asyncio.Task[None] | None = None

    async def entry(self, project_id: str, artifact_id: str) -> dict[str, Any] | None:
        room = await self.rooms.get(project_id)
        found = room.doc.get("artifacts", type=Map).get(artifact_id)
        entry = found.to_py() if isinstance(found, Map) else None
        return entry if stored_sha256(entry) else None

    async def upload(
        self,
        project_id: str,
        artifact_id: str,
        body: AsyncIterable[bytes],
        content_type: str,
        metadata: dict[str, Any],
    ) -> Upload:
        """Store, then index. Raises ObjectTooLarge (nothing kept), ArtifactExists,
        ObjectStoreError, NotIndexed."""
        await self.rooms.get(project_id)  # ProjectNotFound before reading the body
        staged = f"{STAGING}{uuid.uuid4().hex}"
        info = await self.objects.put(staged, body, max_bytes=self.max_bytes)
        assert info.sha256 is not None
        sha = info.sha256
        existing = await self.entry(project_id, artifact_id)
        if existing is not None:
            await self.objects.delete(staged)
            return self._again(artifact_id, existing, sha)
        key = object_key(project_id, artifact_id, sha)
        try:
            await self.objects.move(staged, key)
        except BaseException:
            await asyncio.shield(self.objects.delete(staged))
            raise
        entry = {
            **metadata,
            "key": relative_key(artifact_id, sha),
            "content_type": content_type,
            "size": float(info.size),
            "sha256": sha,
            "created_at": to_iso(utc_now()),
        }
        winner = await self._index(project_id, artifact_id, entry)
        if winner is not entry:  # another upload of this id was indexed meanwhile
            if stored_sha256(winner) != sha:
                await self.objects.delete(key)
            return self._again(artifact_id, winner, sha)
        return Upload(201, entry)

    def _again(self, artifact_id: str, existing: dict[str, Any], sha: str) -> Upload:
        if stored_sha256(existing) == sha:
            return Upload(200, existing)
        raise ArtifactExists(artifact_id, existing)

    async def _index(
        self, project_id: str, artifact_id: str, entry: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the entry as the server unless one is there; the entry in force, once
        committed."""
        room = await self.rooms.get(project_id)
        root = room.doc.get("artifacts", type=Map)
        found = root.get(artifact_id)
        if isinstance(found, Map) and stored_sha256(current := found.to_py()):
            return current

        def write(doc: Doc) -> None:
            target = doc.get("artifacts", type=Map).get(artifact_id)
            if isinstance(target, Map):  # annotations a client wrote first are kept
                for name, value in entry.items():
                    target[name] = value
            else:
                doc.get("artifacts", type=Map)[artifact_id] = to_shared(entry)

        committed = room.server_write(write)
        if committed is not None:
            try:
                await asyncio.wait_for(asyncio.shield(committed), INDEX_TIMEOUT_S)
            except TimeoutError:
                raise NotIndexed(f"artifact {artifact_id!r} is stored, not yet indexed") from None
        return entry

    # --- orphans ----------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Remove objects no entry names (and staged bodies) older than the grace period;
        the keys removed."""
        cutoff = utc_now() - self.orphan_grace
        removed = []
        async for info in self.objects.list(STAGING):
            if info.modified < cutoff:
                await self.objects.delete(info.key)
                removed.append(info.key)
        by_project: dict[str, list[str]] = {}
        async for info in self.objects.list(PROJECTS):
            if info.modified < cutoff:
                by_project.setdefault(info.key.split("/")[1], []).append(info.key)
        for project_id, keys in by_project.items():
            named = await self._named_keys(project_id)
            for key in keys:
                if key not in named:
                    await self.objects.delete(key)
                    removed.append(key)
        if removed:
            log.info("swept %d orphan objects", len(removed))
        return removed

    async def _named_keys(self, project_id: str) -> set[str]:
        """The keys the project's entries name: in its live document if it is loaded
        here, else as stored (entries are committed before an upload is answered)."""
        room = self.rooms.rooms.get(project_id)
        if room is not None and not room.closing:
            entries = indexed(room.doc)
        else:
            try:
                stored = await self.store.load(project_id)
            except ProjectNotFound:
                return set()
            # Replaying is work in proportion to the document: off the loop.
            entries = await asyncio.to_thread(lambda: indexed(replay(stored)))
        return {object_key(project_id, aid, sha) for aid, sha in entries.items()}

    def start(self, every_s: float) -> None:
        self._task = asyncio.create_task(self._run(every_s), name="orphan-sweep")

    async def _run(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except (ObjectStoreError, OSError) as exc:
                log.warning("orphan sweep failed: %s", exc)
            except Exception:
                log.exception("orphan sweep failed")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
