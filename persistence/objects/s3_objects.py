"""S3-compatible object storage (MinIO) through the `minio` client.

`minio` is synchronous: each call runs in a worker thread. A put streams: the thread
reads the body through a file-like `_Pull` that fetches one chunk at a time from the
event loop, and `minio` sends it as a multipart upload of `part_bytes` parts, so memory
holds about one part whatever the object's size. S3 publishes an object only when its
upload completes (a failed one is aborted), so no partial object is ever visible.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource
from minio.error import MinioException, S3Error

from blackboard.persistence.objects.object_store import (
    CHUNK_BYTES,
    Hashing,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    S3Config,
    check_key,
)

T = TypeVar("T")

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum; a part is what a put holds in memory
MAX_PARTS = 9000  # S3 allows 10,000
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


def part_bytes(max_bytes: int | None) -> int:
    """A part size that fits an object of `max_bytes` in the allowed number of parts."""
    if max_bytes is None:
        return MIN_PART_BYTES * 8  # up to ~370 GB
    return max(MIN_PART_BYTES, math.ceil(max_bytes / MAX_PARTS))


class _Pull:
    """A blocking `read(n)` for a worker thread over an async iterator of the loop."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._rest = memoryview(b"")  # what is left of the last chunk fetched
        self._done = False
        self.error: BaseException | None = None  # the body's own failure, re-raised as is

    def _next(self) -> bytes | None:
        async def step() -> bytes | None:
            return await anext(self._chunks, None)

        try:
            # Bounded: a loop that stopped (the request gone) must not hold this thread.
            return asyncio.run_coroutine_threadsafe(step(), self._loop).result(READ_TIMEOUT_S)
        except BaseException as exc:
            self.error = exc
            raise

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left if negative); b"" at the end.

        minio asks for a whole part at once: it is filled in place, chunk by chunk, each
        chunk dropped once copied, so a part is held about twice (here, then by minio),
        not once per chunk as well."""
        if size < 0:
            size = 2**62
        out = bytearray()
        while len(out) < size:
            if not self._rest:
                chunk = None if self._done else self._next()
                if chunk is None:
                    self._done = True
                    break
                self._rest = memoryview(chunk)
            take = min(size - len(out), len(self._rest))
            out += self._rest[:take]
            self._rest = self._rest[take:]
        return bytes(out)


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """`host:port` for minio; a URL's scheme decides TLS."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.netloc, parts.scheme == "https"
    return endpoint, secure


class S3Objects:
    name = "s3"

    def __init__(self, config: S3Config) -> None:
        endpoint, secure = _split_endpoint(config.endpoint, config.secure)
        self.bucket = config.bucket
        self._client = Minio(
            endpoint,
            access_key=config.access_key,
            secret_key=config.secret_key,
            secure=secure,
            region=config.region,
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
                retries=urllib3.Retry(total=2, backoff_factor=0.2),
                maxsize=16,
            ),
        )

    async def _call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(work, *args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(exc.object_name or "") from None
            raise ObjectStoreError(f"S3 {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ObjectStoreError(f"S3 at {self._client._base_url.host}: {exc}") from exc

    async def open(self) -> None:
        if not await self._call(self._client.bucket_exists, self.bucket):
            try:
                await self._call(self._client.make_bucket, self.bucket)
            except ObjectStoreError:
                # Another instance may have created it meanwhile.
                if not await self._call(self._client.bucket_exists, self.bucket):
                    raise

    async def ping(self) -> None:
        if not await self._call(self._client.bucket_exists, self.bucket):
            raise ObjectStoreError(f"bucket {self.bucket!r} does not exist")

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> ObjectInfo:
        hashing = Hashing(body, max_bytes)
        pull = _Pull(hashing.chunks(), asyncio.get_running_loop())
        try:
            await self._call(
                self._client.put_object,
                self.bucket,
                check_key(key),
                pull,
                length=-1,
                part_size=part_bytes(max_bytes),
            )
        except ObjectStoreError:
            if pull.error is not None:  # minio aborted the upload; the cause is the body's
                raise pull.error from None
            raise
        info = await self.stat(key)
        assert info is not None
        return ObjectInfo(key, hashing.size, info.modified, hashing.sha256)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        length = 0 if end is None else end - start + 1  # minio: 0 means to the end
        response = await self._call(
            self._client.get_object, self.bucket, check_key(key), offset=start, length=length
        )
        try:
            stream = response.stream(CHUNK_BYTES)
            while chunk := await self._call(next, stream, b""):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            found = await self._call(self._client.stat_object, self.bucket, check_key(key))
        except ObjectNotFound:
            return None
        return ObjectInfo(key, found.size or 0, _utc(found.last_modified))

    async def move(self, source: str, target: str) -> None:
        # compose_object copies server-side, in parts past S3's 5 GiB single-copy limit.
        await self._call(
            self._client.compose_object,
            self.bucket,
            check_key(target),
            [ComposeSource(self.bucket, check_key(source))],
        )
        await self.delete(source)

    async def delete(self, key: str) -> None:
        await self._call(self._client.remove_object, self.bucket, check_key(key))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        listing = iter(self._client.list_objects(self.bucket, prefix=prefix, recursive=True))
        while (found := await self._call(next, listing, None)) is not None:
            yield ObjectInfo(found.object_name, found.size or 0, _utc(found.last_modified))


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
