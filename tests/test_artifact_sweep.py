"""A crash between storing an artifact and indexing it (a fault injected between the two
steps) leaves an orphan object and no entry; the sweep removes orphans past the grace
period and nothing an entry names."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Map

from blackboard.persistence.objects.artifact_keys import object_key
from blackboard.persistence.objects.object_store import chunks_of
from blackboard.sync.projects.artifacts import Artifacts
from blackboard.sync.projects.creation import create_project
from blackboard.web.services import Services
from blackboard.web.settings import Settings
from tests.support.s3_server import S3ServerProcess


@pytest.fixture(params=["folder", "s3"])
async def services(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Services]:
    s3 = None
    if request.param == "s3":
        server: S3ServerProcess = request.getfixturevalue("s3_server")
        s3 = server.config()
    svc = Services.build(Settings(data_dir=tmp_path, orphan_grace_s=0.0, s3=s3))
    await svc.start()
    await create_project(svc.store, "film", "Film", 10_000, "USD", {}, actor="test")
    try:
        yield svc
    finally:
        await svc.stop()


class Crash(Exception):
    pass


async def test_crash_between_store_and_index_leaves_an_orphan_the_sweep_removes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = services.artifacts
    kept = await artifacts.upload("film", "kept", chunks_of(b"kept bytes"), "text/plain", {})
    assert kept.status == 201

    async def crash(*_: object) -> None:
        raise Crash("the process died here")

    monkeypatch.setattr(Artifacts, "_index", crash)
    with pytest.raises(Crash):
        await artifacts.upload("film", "lost", chunks_of(b"lost bytes"), "text/plain", {})
    monkeypatch.undo()

    lost_key = object_key("film", "lost", hashlib.sha256(b"lost bytes").hexdigest())
    assert await services.objects.stat(lost_key) is not None  # stored ...
    assert await artifacts.entry("film", "lost") is None  # ... never indexed
    kept_key = object_key("film", "kept", kept.entry["sha256"])

    await services.objects.put("staging/left-by-a-crash", chunks_of(b"half"))
    removed = await artifacts.sweep()
    assert sorted(removed) == sorted([lost_key, "staging/left-by-a-crash"])
    assert await services.objects.stat(lost_key) is None
    assert await services.objects.stat(kept_key) is not None
    # The id is free again: a retry stores and indexes it.
    retry = await artifacts.upload("film", "lost", chunks_of(b"lost bytes"), "text/plain", {})
    assert retry.status == 201
    assert await artifacts.sweep() == []


async def test_the_sweep_spares_young_objects_and_reads_unloaded_projects(
    services: Services,
) -> None:
    artifacts = services.artifacts
    await artifacts.upload("film", "a", chunks_of(b"a"), "text/plain", {})
    await services.rooms.unload("film")  # the sweep reads the stored document instead
    young = Artifacts(
        services.objects, services.store, services.rooms, max_bytes=10, orphan_grace_s=3600
    )
    await services.objects.put("projects/film/artifacts/x/" + "0" * 64, chunks_of(b"x"))
    await services.objects.put("projects/ghost/artifacts/y/" + "1" * 64, chunks_of(b"y"))
    assert await young.sweep() == []  # younger than the grace period
    removed = await artifacts.sweep()
    assert sorted(removed) == [
        "projects/film/artifacts/x/" + "0" * 64,
        "projects/ghost/artifacts/y/" + "1" * 64,
    ]
    assert await artifacts.entry("film", "a") is not None


async def test_an_upload_keeps_annotations_written_before_it(services: Services) -> None:
    room = await services.rooms.get("film")
    room.server_write(
        lambda doc: doc.get("artifacts", type=Map).__setitem__(
            "hero", Map({"note": "use for the poster"})
        )
    )
    upload = await services.artifacts.upload(
        "film", "hero", chunks_of(b"pixels"), "image/png", {"seed": 7.0}
    )
    assert upload.status == 201
    entry = await services.artifacts.entry("film", "hero")
    assert entry is not None
    assert entry["note"] == "use for the poster" and entry["seed"] == 7
    assert entry["sha256"] == hashlib.sha256(b"pixels").hexdigest()
