"""The object store (DESIGN.md section 9): artifacts and export archives, as byte streams
under string keys. Two backends implement `ObjectStore`: a folder in the data dir (the
embedded default) and S3-compatible storage (MinIO) when BLACKBOARD_S3_ENDPOINT is set.

Objects are written whole or not at all: a reader never sees part of an object under its
key, whatever happens during the write. Bodies stream in bounded chunks both ways, so
memory stays flat whatever the object's size; `put` hashes on the way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

CHUNK_BYTES = 1024 * 1024  # one read or write of a body
_KEY = re.compile(r"^[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)*$")


class ObjectStoreError(Exception):
    """The backend failed (unreachable, refused, or a bad key)."""


class ObjectNotFound(ObjectStoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}")
        self.key = key


class ObjectTooLarge(ObjectStoreError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body exceeds {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime
    sha256: str | None = None  # known when this process just wrote it


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # host:port, or a URL
    access_key: str
    secret_key: str
    bucket: str = "blackboard"
    secure: bool = False
    region: str | None = None


class ObjectStore(Protocol):
    @property
    def name(self) -> str:
        """The backend, for /readyz: "folder" or "s3"."""
        ...

    async def open(self) -> None:
        """Prepare the backend (the folder, or the bucket created if missing)."""
        ...

    async def ping(self) -> None: ...

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> ObjectInfo:
        """Store `body` under `key` (replacing any object there) and return its size
        and sha256. Past `max_bytes`: ObjectTooLarge, and nothing is kept."""
        ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (inclusive; None: the last) of the object, streamed;
        ObjectNotFound (raised on the first iteration) if there is none."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...

    async def move(self, source: str, target: str) -> None:
        """Rename (on S3: a server-side copy, then delete the source)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; nothing if there is none."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix`."""
        ...


def check_key(key: str) -> str:
    """Keys are slash-separated ids: no empty, `.` or `..` segment, so a folder key
    cannot leave its root."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ObjectStoreError(f"invalid object key {key!r}")
    return key


class Hashing:
    """Passes chunks through, counting and hashing them; past `max_bytes` raises
    ObjectTooLarge before the chunk that crosses it is passed on."""

    def __init__(self, body: AsyncIterable[bytes], max_bytes: int | None) -> None:
        self._body = body
        self._max = max_bytes
        self._sha = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            if not chunk:
                continue
            self.size += len(chunk)
            if self._max is not None and self.size > self._max:
                raise ObjectTooLarge(self._max)
            self._sha.update(chunk)
            yield chunk


async def read_all(store: ObjectStore, key: str) -> bytes:
    """A small object whole (manifests, tests); large ones are streamed instead."""
    return b"".join([chunk async for chunk in store.get(key)])


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes in chunks, each read in a worker thread."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(file.close)


def make_object_store(data_dir: Path, s3: S3Config | None) -> ObjectStore:
    if s3 is not None:
        from blackboard.persistence.objects.s3_objects import S3Objects

        return S3Objects(s3)
    from blackboard.persistence.objects.folder_objects import FolderObjects

    return FolderObjects(data_dir / "objects")
