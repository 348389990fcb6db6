"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from persistence.document_store import DocumentStore
from persistence.factory import make_store
from tests.support.backends import create_database, drop_database
from tests.support.js import JsClients
from tests.support.s3_server import S3ServerProcess
from tests.support.server import ServerProcess


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh Postgres database for this test, migrated (see `create_database`)."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocumentStore]:
    """The same store tests run on both backends, so the two never drift apart."""
    url = await create_database() if request.param == "postgres" else None
    store = make_store(url, tmp_path)
    await store.open(migrate_schema=True)
    try:
        yield store
    finally:
        await store.close()
        if url:
            await drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """Environment for `start_server` on each backend (embedded SQLite, then Postgres)."""
    if request.param == "sqlite":
        yield {}
        return
    url = await create_database()
    try:
        yield {"BLACKBOARD_DATABASE_URL": url}
    finally:
        await drop_database(url)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real server processes: `start_server(env={...}, data_dir=...)`."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, data_dir: Path | None = None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    clients = await JsClients.start()
    try:
        yield clients
    finally:
        await clients.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3ServerProcess]:
    """One S3-compatible server process (moto) on loopback; each user takes a bucket."""
    server = S3ServerProcess(tmp_path_factory.mktemp("s3")).start()
    try:
        yield server
    finally:
        server.close()
