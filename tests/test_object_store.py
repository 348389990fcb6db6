"""The object store: the same suite against the data-dir folder and a real S3 server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blackboard.persistence.objects.object_store import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectTooLarge,
    chunks_of,
    make_object_store,
    read_all,
)
from tests.support.s3_server import S3ServerProcess


@pytest.fixture(params=["folder", "s3"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    s3 = None
    if request.param == "s3":
        server: S3ServerProcess = request.getfixturevalue("s3_server")
        s3 = server.config()
    store = make_object_store(tmp_path, s3)
    await store.open()
    yield store


async def test_put_hashes_and_get_returns_the_bytes(objects: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = await objects.put("projects/p/artifacts/a/x", chunks_of(data))
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await read_all(objects, "projects/p/artifacts/a/x") == data
    stat = await objects.stat("projects/p/artifacts/a/x")
    assert stat is not None and stat.size == len(data)
    await objects.ping()


async def test_ranges(objects: ObjectStore) -> None:
    data = bytes(range(256)) * 64
    await objects.put("k", chunks_of(data))
    part = b"".join([c async for c in objects.get("k", 100, 4099)])
    assert part == data[100:4100]
    tail = b"".join([c async for c in objects.get("k", len(data) - 5)])
    assert tail == data[-5:]


async def test_a_body_past_the_cap_keeps_nothing(objects: ObjectStore) -> None:
    with pytest.raises(ObjectTooLarge):
        await objects.put("big", chunks_of(b"x" * 5000), max_bytes=4096)
    assert await objects.stat("big") is None
    assert [o.key async for o in objects.list("")] == []


async def test_a_failing_body_leaves_no_object(objects: ObjectStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 1024
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await objects.put("half", broken())
    assert await objects.stat("half") is None


async def test_missing_objects(objects: ObjectStore) -> None:
    assert await objects.stat("nope") is None
    with pytest.raises(ObjectNotFound):
        await read_all(objects, "nope")
    with pytest.raises(ObjectNotFound):
        await objects.move("nope", "other")
    await objects.delete("nope")  # nothing to do, no error


async def test_move_list_delete(objects: ObjectStore) -> None:
    for key in ("staging/1", "projects/p/artifacts/a/1", "projects/p/artifacts/b/2", "exports/p/e"):
        await objects.put(key, chunks_of(key.encode()))
    await objects.move("staging/1", "projects/p/artifacts/c/3")
    assert await objects.stat("staging/1") is None
    assert await read_all(objects, "projects/p/artifacts/c/3") == b"staging/1"
    keys = [o.key async for o in objects.list("projects/p/")]
    assert keys == [
        "projects/p/artifacts/a/1",
        "projects/p/artifacts/b/2",
        "projects/p/artifacts/c/3",
    ]
    await objects.delete("projects/p/artifacts/a/1")
    assert [o.key async for o in objects.list("projects/p/artifacts/a")] == []


@pytest.mark.parametrize("key", ["", "../escape", "a//b", "a/./b", "/abs", "a b"])
async def test_bad_keys_are_refused(objects: ObjectStore, key: str) -> None:
    with pytest.raises(ObjectStoreError):
        await objects.put(key, chunks_of(b"x"))


async def test_s3_unreachable_is_a_store_error(tmp_path: Path) -> None:
    from blackboard.persistence.objects.object_store import S3Config
    from tests.support.server import free_port

    store = make_object_store(tmp_path, S3Config(f"127.0.0.1:{free_port()}", "a", "b"))
    with pytest.raises(ObjectStoreError):
        await store.ping()
