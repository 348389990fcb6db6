"""Artifacts over HTTP against a real server process, on the data-dir folder and on a
real S3 server: streamed both ways, hashed, ranged, refused past the cap, and never
indexed without their object."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.procstat import rss_bytes
from tests.support.api import bearer, create_project, history
from tests.support.auth import start_auth_server, token
from tests.support.s3_server import S3ServerProcess
from tests.support.server import ServerProcess, StartServer

MB = 1024 * 1024


@pytest.fixture(params=["folder", "s3"])
async def artifact_server(
    request: pytest.FixtureRequest, start_server: StartServer
) -> ServerProcess:
    env = {"BLACKBOARD_MAX_ARTIFACT_BYTES": str(300 * MB)}
    if request.param == "s3":
        s3: S3ServerProcess = request.getfixturevalue("s3_server")
        env.update(s3.env(s3.config()))
    return await start_server(env=env)


def url(project: str, artifact: str) -> str:
    return f"/api/projects/{project}/artifacts/{artifact}"


async def test_upload_index_download(artifact_server: ServerProcess) -> None:
    await create_project(artifact_server, "film")
    data = os.urandom(2 * MB + 3)
    sha = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(base_url=artifact_server.http, timeout=30) as http:
        put = await http.put(
            url("film", "frame-1"),
            content=data,
            headers={"Content-Type": "image/png"},
            params={"shot_id": "s1", "model": "m", "model_version": "2", "seed": "42"}
            | {"cost": "0.5"},
        )
        assert put.status_code == 201, put.text
        entry = put.json()
        assert entry["sha256"] == sha and entry["size"] == len(data)
        assert entry["key"] == f"artifacts/frame-1/{sha}"
        metadata = (entry["shot_id"], entry["model"], entry["seed"], entry["cost"])
        assert metadata == ("s1", "m", 42, 0.5)
        doc = (await http.get("/api/projects/film")).json()["doc"]
        assert doc["artifacts"]["frame-1"] == entry

        got = await http.get(url("film", "frame-1"))
        assert got.status_code == 200 and got.content == data
        assert got.headers["etag"] == f'"{sha}"'
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-length"] == str(len(data))
        head = await http.head(url("film", "frame-1"))
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert head.content == b""

        part = await http.get(url("film", "frame-1"), headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        tail = await http.get(url("film", "frame-1"), headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        bad = await http.get(url("film", "frame-1"), headers={"Range": f"bytes={len(data)}-"})
        assert bad.status_code == 416
        assert bad.headers["content-range"] == f"bytes */{len(data)}"
        cached = await http.get(url("film", "frame-1"), headers={"If-None-Match": f'"{sha}"'})
        assert cached.status_code == 304

        again = await http.put(url("film", "frame-1"), content=data)
        assert again.status_code == 200 and again.json() == entry
        other = await http.put(url("film", "frame-1"), content=data + b"!")
        assert other.status_code == 409 and other.json()["error"] == "artifact_exists"
        assert (await http.get(url("film", "frame-1"))).content == data

        missing = await http.get(url("film", "nope"))
        assert missing.status_code == 404
        no_project = await http.put(url("ghost", "a"), content=b"x")
        assert no_project.status_code == 404
        bad_seed = await http.put(url("film", "b"), content=b"x", params={"seed": "nan"})
        assert bad_seed.status_code == 422
        assert "b" not in (await http.get("/api/projects/film")).json()["doc"]["artifacts"]
        ready = (await http.get("/readyz")).json()
    assert any(k.startswith("objects_") and v == "ok" for k, v in ready["checks"].items())


async def test_past_the_cap_is_413_and_keeps_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(env={"BLACKBOARD_MAX_ARTIFACT_BYTES": str(MB)})
    await create_project(server, "film")

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(3):
            yield b"x" * (MB // 2)

    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        streamed = await http.put(url("film", "big"), content=body())
        assert streamed.status_code == 413, streamed.text
        declared = await http.put(url("film", "big"), content=b"x" * (MB + 1))
        assert declared.status_code == 413
        assert (await http.get(url("film", "big"))).status_code == 404
    objects = tmp_path / "data" / "objects"
    assert [p for p in objects.rglob("*") if p.is_file()] == []


async def test_200_mb_round_trip_keeps_server_memory_flat(
    artifact_server: ServerProcess,
) -> None:
    await create_project(artifact_server, "film")
    assert artifact_server.proc is not None
    pid = artifact_server.proc.pid
    size = 200 * MB
    block = os.urandom(MB)
    expected = hashlib.sha256()
    for _ in range(200):
        expected.update(block)
    before = rss_bytes(pid)
    peak = before

    async def body() -> AsyncIterator[bytes]:
        nonlocal peak
        for n in range(200):
            if n % 10 == 0:
                peak = max(peak, rss_bytes(pid))
            yield block

    async with httpx.AsyncClient(base_url=artifact_server.http, timeout=120) as http:
        put = await http.put(url("film", "clip"), content=body())
        assert put.status_code == 201, put.text
        assert put.json()["size"] == size
        assert put.json()["sha256"] == expected.hexdigest()
        got, received = hashlib.sha256(), 0
        async with http.stream("GET", url("film", "clip")) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                got.update(chunk)
                received += len(chunk)
                if received % (20 * MB) < len(chunk):
                    peak = max(peak, rss_bytes(pid))
    assert received == size and got.hexdigest() == expected.hexdigest()
    growth = max(peak, rss_bytes(pid)) - before
    print(f"server RSS growth {growth / MB:.1f} MB")
    assert growth < 50 * MB, f"server RSS grew {growth / MB:.1f} MB"


async def test_an_unreachable_s3_is_reported_and_refused_clearly(
    start_server: StartServer, tmp_path: Path
) -> None:
    s3 = await asyncio.to_thread(S3ServerProcess(tmp_path).start)  # its wait blocks
    try:
        server = await start_server(env=s3.env(s3.config()))
        await create_project(server, "film")
        async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
            assert (await http.get("/readyz")).json()["checks"]["objects_s3"] == "ok"
            await asyncio.to_thread(s3.close)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["objects_s3"].startswith("down: ")
            put = await http.put(url("film", "a"), content=b"bytes")
            assert put.status_code == 503 and put.json()["error"] == "object_store_unavailable"
            doc = (await http.get("/api/projects/film")).json()["doc"]
            assert doc["artifacts"] == {}
    finally:
        await asyncio.to_thread(s3.close)


async def test_uploads_need_the_write_role_and_reads_the_read_role(
    start_server: StartServer,
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    reader, writer = token("film", "read", "rita"), token("film", "write", "wes")
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        refused = await http.put(url("film", "a"), content=b"bytes", headers=bearer(reader))
        assert refused.status_code == 403
        anonymous = await http.put(url("film", "a"), content=b"bytes")
        assert anonymous.status_code == 401
        stored = await http.put(url("film", "a"), content=b"bytes", headers=bearer(writer))
        assert stored.status_code == 201
        got = await http.get(url("film", "a"), headers=bearer(reader))
        assert got.content == b"bytes"
        exported = await http.post("/api/projects/film/exports", json={}, headers=bearer(reader))
        assert exported.status_code == 403
        other = await http.get(url("film", "a"), headers=bearer(token("other", "admin", "x")))
        assert other.status_code == 403
    entries = await history(server, "film", admin)
    assert entries[-1][1] == "server"  # the index is written by the server
