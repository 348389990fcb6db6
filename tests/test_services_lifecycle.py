"""`Services.start` is all or nothing: when a later part fails to start (here the object
store: its folder is a file), every part already started is stopped again, its tasks
awaited and the database closed. `stop` after a good start leaks no task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blackboard.persistence.errors import LogFull, StoreError
from blackboard.web.services import Services
from blackboard.web.settings import Settings
from tests.support.backends import REDIS_URL, create_database, drop_database, redis_prefix


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    url = await create_database() if request.param == "postgres" else None
    try:
        yield Settings(
            data_dir=tmp_path,
            database_url=url,
            redis_url=REDIS_URL,  # the peer relay's tasks run too
            redis_prefix=redis_prefix(),
            shutdown_timeout_s=5.0,
        )
    finally:
        if url:
            await drop_database(url)


def _running(before: set[asyncio.Task[object]]) -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() - before if not t.done())


async def test_a_part_failing_to_start_stops_what_started(settings: Settings) -> None:
    (settings.data_dir / "objects").write_bytes(b"not a folder")  # the object store fails
    services = Services.build(settings)
    before = asyncio.all_tasks()
    with pytest.raises(OSError):
        await asyncio.wait_for(services.start(), 30)
    assert _running(before) == []
    with pytest.raises(StoreError, match="not open"):
        await services.store.db.fetchval("SELECT 1")
    with pytest.raises(LogFull, match="shutting down"):  # started, then stopped
        services.update_log.check_room(1)
    await services.stop()  # nothing left to stop: a no-op, not an error


async def test_stop_awaits_every_task_it_cancels(settings: Settings) -> None:
    services = Services.build(settings)
    before = asyncio.all_tasks()
    await asyncio.wait_for(services.start(), 30)
    assert _running(before)  # the writers, the reaper, the sweeps, the peer relay
    await asyncio.wait_for(services.stop(), 30)
    assert _running(before) == []
    with pytest.raises(StoreError, match="not open"):
        await services.store.db.fetchval("SELECT 1")
