"""The embedded object store: one file per object under a folder of the data dir.

A put writes a temporary file under `.tmp/`, fsyncs it and renames it over its key, so
a crash never leaves part of an object under a key (a temporary file left by a crash is
removed at an open once untouched for an hour: other processes, a server and the
command line, may be writing theirs meanwhile). Every file operation runs in a worker
thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from blackboard.persistence.objects.object_store import (
    CHUNK_BYTES,
    Hashing,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    check_key,
)

_TMP = ".tmp"
STALE_TMP_S = 3600.0


class FolderObjects:
    name = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def open(self) -> None:
        def prepare() -> None:
            tmp = self.root / _TMP
            tmp.mkdir(parents=True, exist_ok=True)
            stale = time.time() - STALE_TMP_S
            for leftover in tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if leftover.stat().st_mtime < stale:
                        leftover.unlink()

        await asyncio.to_thread(prepare)

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            raise ObjectStoreError(f"{self.root} is not writable")

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> ObjectInfo:
        path = self._path(key)
        tmp = self.root / _TMP / uuid.uuid4().hex
        hashing = Hashing(body, max_bytes)
        file: BinaryIO = await asyncio.to_thread(tmp.open, "wb")
        try:
            async for chunk in hashing.chunks():
                await asyncio.to_thread(file.write, chunk)
            await asyncio.to_thread(_sync_and_close, file)
            await asyncio.to_thread(_rename, tmp, path)
        except BaseException:
            await asyncio.to_thread(_discard, file, tmp)
            raise
        stat = await asyncio.to_thread(path.stat)
        return ObjectInfo(key, hashing.size, _modified(stat.st_mtime), hashing.sha256)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            file: BinaryIO = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            await asyncio.to_thread(file.seek, start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                want = CHUNK_BYTES if left is None else min(CHUNK_BYTES, left)
                chunk = await asyncio.to_thread(file.read, want)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            stat = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            return None
        return ObjectInfo(key, stat.st_size, _modified(stat.st_mtime))

    async def move(self, source: str, target: str) -> None:
        try:
            await asyncio.to_thread(_rename, self._path(source), self._path(target))
        except FileNotFoundError:
            raise ObjectNotFound(source) from None
        # A moved object is new under its key (like an S3 copy): the orphan sweep's
        # grace period counts from now, not from when its bytes were written.
        await asyncio.to_thread(os.utime, self._path(target))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        found = await asyncio.to_thread(self._walk, prefix)
        for info in found:
            yield info

    def _walk(self, prefix: str) -> list[ObjectInfo]:
        found = []
        # Only the folder the prefix names is walked (its last segment may be partial).
        start = self.root / prefix[: prefix.rfind("/") + 1]
        for folder, dirs, files in os.walk(start):
            if Path(folder) == self.root and _TMP in dirs:
                dirs.remove(_TMP)
            for name in files:
                path = Path(folder) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        stat = path.stat()
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    found.append(ObjectInfo(key, stat.st_size, _modified(stat.st_mtime)))
        return sorted(found, key=lambda info: info.key)


def _modified(mtime: float) -> datetime:
    return datetime.fromtimestamp(mtime, UTC)


def _sync_and_close(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _rename(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    # The rename is durable once its folder is synced.
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(file: BinaryIO, tmp: Path) -> None:
    file.close()
    tmp.unlink(missing_ok=True)
