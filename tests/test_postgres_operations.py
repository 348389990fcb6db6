"""Running on Postgres: `blackboard migrate`, a server refusing a database that is behind,
the configured pool size, and seqs from several writer processes at once."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from blackboard.persistence.factory import make_store
from blackboard.sync.projects.creation import initial_update
from blackboard.web.services import Services
from blackboard.web.settings import Settings
from tests.support.backends import create_database, drop_database
from tests.support.cli import run_cli
from tests.support.server import ROOT, StartServer


@pytest.fixture
async def bare_url() -> AsyncIterator[str]:
    """A Postgres database with no schema at all."""
    url = await create_database(migrated=False)
    try:
        yield url
    finally:
        await drop_database(url)


async def test_serve_and_create_refuse_a_database_that_is_behind(
    bare_url: str, tmp_path: Path
) -> None:
    env = {"BLACKBOARD_DATABASE_URL": bare_url, "BLACKBOARD_DATA_DIR": str(tmp_path)}
    for args in (("serve", "--port", "1"), ("create", "x", "--title", "T", "--budget", "1")):
        code, _out, err = await run_cli(*args, env=env)
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "lacks migrations 0001_documents" in lines[0]
        assert "run `blackboard migrate` first" in lines[0]
    # Nothing was created behind the operator's back.
    conn = await asyncpg.connect(bare_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('projects')") is None
    finally:
        await conn.close()


async def test_migrate_applies_everything_once_then_serve_starts(
    bare_url: str, tmp_path: Path, start_server: StartServer
) -> None:
    env = {"BLACKBOARD_DATABASE_URL": bare_url}
    code, out, err = await run_cli("migrate", env=env)
    assert code == 0, err
    assert "applied 0001_documents" in out
    assert "applied 0002_compaction_history" in out
    assert "postgres schema is up to date" in out
    code, again, err = await run_cli("migrate", env=env)
    assert code == 0, err
    assert "applied" not in again and "up to date" in again

    code, out, err = await run_cli("create", "film", "--title", "T", "--budget", "5", env=env)
    assert code == 0, err
    server = await start_server(env=env)
    assert "Blackboard on" in server.logs()


async def test_migrate_reports_an_unreachable_database_in_one_line() -> None:
    env = {"BLACKBOARD_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    code, _out, err = await run_cli("migrate", env=env)
    assert code == 1
    assert err.strip().count("\n") == 0 and "cannot connect to Postgres" in err


async def test_pool_size_is_honored(pg_url: str, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"BLACKBOARD_DATABASE_URL": pg_url, "BLACKBOARD_DATABASE_POOL_SIZE": "3"}
    )
    store = Services.build(settings).store
    await store.open(migrate_schema=False)
    try:
        assert store.db.pool.get_max_size() == 3  # type: ignore[attr-defined]
        database = pg_url.rsplit("/", 1)[1]
        peak = 0

        async def watch() -> None:
            nonlocal peak
            conn = await asyncpg.connect(pg_url)
            try:
                while True:
                    count = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = $1 AND pid <> pg_backend_pid()",
                        database,
                    )
                    peak = max(peak, count)
                    await asyncio.sleep(0.02)  # the sampling period
            finally:
                await conn.close()

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(store.db.fetchval("SELECT pg_sleep(0.2)") for _ in range(9)))
        watcher.cancel()
        assert peak == 3  # nine queries at once, never more than three connections
    finally:
        await store.close()


async def test_seqs_from_several_writer_processes_are_gap_free_in_commit_order(
    pg_url: str, tmp_path: Path
) -> None:
    projects = ["p0", "p1", "p2", "p3"]
    store = make_store(pg_url, tmp_path, pool_size=2)
    await store.open(migrate_schema=False)
    for project_id in projects:
        await store.create_project(project_id, project_id, initial_update("t", 1, "USD", {}), "t")

    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.appender",
            pg_url,
            str(writer),
            "120",
            *projects,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for writer in range(4)
    ]
    observations = 0

    async def observe_prefixes() -> None:
        # Whatever is committed must always be 1..N: a later seq never commits first.
        nonlocal observations
        while True:
            for project_id in projects:
                rows = await store.db.fetch(
                    "SELECT seq FROM doc_updates WHERE project_id = $1 ORDER BY seq", project_id
                )
                seqs = [row[0] for row in rows]
                assert seqs == list(range(1, len(seqs) + 1)), f"{project_id}: gap in {seqs}"
                observations += 1
            await asyncio.sleep(0)  # one loop turn: observe between any two commits

    reader = asyncio.create_task(observe_prefixes())
    outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate() for w in writers)), 120)
    reader.cancel()
    try:
        for writer, (_, err) in zip(writers, outputs, strict=True):
            assert writer.returncode == 0, err.decode()
        assert observations > 10

        reported: dict[str, dict[int, str]] = defaultdict(dict)
        for out, _ in outputs:
            last_seen: dict[str, int] = {}
            for line in out.decode().splitlines():
                for project_id, payload, seq in json.loads(line):
                    assert seq not in reported[project_id], "a seq was handed out twice"
                    reported[project_id][seq] = payload
                    # Each writer's rows of a project get increasing seqs, in its order.
                    assert seq > last_seen.get(project_id, 0)
                    last_seen[project_id] = seq
        for project_id in projects:
            rows = await store.db.fetch(
                'SELECT seq, "update" FROM doc_updates WHERE project_id = $1 ORDER BY seq',
                project_id,
            )
            stored = {row[0]: bytes(row[1]).decode() for row in rows if row[0] > 1}
            assert stored == reported[project_id]
            assert sorted(stored) == list(range(2, len(stored) + 2))
            record = await store.get_project(project_id)
            assert record is not None and record.seq == len(stored) + 1
    finally:
        await store.close()
