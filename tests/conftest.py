"""Fixtures shared by the whole suite."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.factory import make_store
from tests.support.backends import create_database, drop_database
from tests.support.js import JsClients
from tests.support.s3_server import S3ServerProcess
from tests.support.server import ServerProcess, StartServer


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
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start real server processes: `await start_server(env={...}, data_dir=...)`."""
    started: list[ServerProcess] = []

    async def start(
        env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", env)
        started.append(server)  # before it is up, so a failed start is cleaned up too
        return await server.start()

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def server(start_server: StartServer) -> ServerProcess:
    return await start_server()


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


# --- markers (registered in pyproject.toml): `pytest -m "not slow"` is the quick loop ---

# What a test needs, from the fixtures it uses (directly or through other fixtures)...
_NEEDS_BY_FIXTURE = {
    "postgres": {"pg_url", "private_pg", "private_url", "bare_url", "cluster"},
    "redis": {"cluster", "prefix", "private_redis", "redis_server"},
    "node": {"js"},
}
# ...from the names its own code uses (a database or Redis it makes itself)...
_NEEDS_BY_NAME = {
    "postgres": {"create_database", "PG_URL", "PrivatePostgres"},
    "redis": {"REDIS_URL", "redis_prefix", "PrivateRedis"},
    "node": {"JsClients"},
}
# ...and from its module (stock JS clients, or the bench's Node peer servers).
_NODE_MODULES = {"test_interop_js", "test_repair_js", "test_bench_runner"}
# The longest: 5 s or more each in one `pytest --durations=30` run of the whole suite on
# 2 shared cores (those 30 took 420 s of its 708 s; the bench run alone 50 s).
_SLOW_MODULES = {
    "test_bench_runner",
    "test_durability_postgres",
    "test_repair_properties",
    "test_scale_out",
    "test_dashboard",
    "test_artifacts_api",
    "test_export_import",
}
_SLOW_TESTS = {
    "test_access_control": {"test_open_mode_says_so_loudly"},
    "test_budget_api": {
        "test_64_clients_with_concurrent_duplicates",
        "test_kill_9_between_commit_and_reply_then_every_key_retried",
        "test_cli_create_takes_an_exact_budget",
    },
    "test_compaction_fencing": {"test_compact_killed_at_random_moments_leaves_a_loadable_project"},
    "test_fence": {"test_sweeps_run_on_one_instance_at_a_time"},
    "test_limits": {
        "test_slow_consumer_is_closed_and_nobody_else_notices",
        "test_flood_is_throttled_then_closed_and_others_keep_their_latency",
    },
    "test_update_fuzz": {"test_malformed_updates_change_nothing_and_crash_nothing"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        fixtures = set(item.fixturenames)
        code = getattr(inspect.unwrap(item.function), "__code__", None)
        names = set(code.co_names) if code is not None else set()
        params = getattr(item, "callspec", None)
        for marker in ("postgres", "redis", "node"):
            if fixtures & _NEEDS_BY_FIXTURE[marker] or names & _NEEDS_BY_NAME[marker]:
                item.add_marker(marker)
        if params is not None and "postgres" in params.params.values():
            item.add_marker("postgres")  # the Postgres case of a store/backend parameter
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if module in _NODE_MODULES:
            item.add_marker("node")
        if module in _SLOW_MODULES or item.originalname in _SLOW_TESTS.get(module, ()):
            item.add_marker("slow")
