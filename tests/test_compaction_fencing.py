"""Compaction against crashes and a second compactor.

A crash is simulated at each step by running the steps one by one and stopping between
them, and for real by SIGKILLing `blackboard compact` at random moments. Every time the
project must still load to exactly the state its log describes; a rerun must finish the
job. Two compactors at once (two separate connection pools, or two processes) must leave
one snapshot.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from blackboard.persistence.clock import utc_now
from blackboard.persistence.compaction import compact, compaction_fence
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.factory import make_store
from blackboard.persistence.fence import FenceLost, Fences, FenceToken
from blackboard.persistence.records import PendingAppend, Snapshot
from blackboard.persistence.replay import replay
from blackboard.schemas.views import doc_to_json
from blackboard.sync.projects.creation import initial_update
from tests.support.api import eventually
from tests.support.cli import run_cli
from tests.support.server import ROOT

LONG = timedelta(minutes=5)


async def take_fence(store: DocumentStore, holder: str, ttl: timedelta) -> FenceToken:
    """Take the project's compaction fence as a compactor that then "crashes" would."""
    token = await Fences(store.db, holder).acquire(compaction_fence("film"), ttl)
    assert token is not None
    return token


async def expire_fences(store: DocumentStore) -> None:
    """Let every fence run out now (as the crashed holder's would, in time)."""
    await store.db.execute("UPDATE work_fences SET expires_at = $1", utc_now())


class Project:
    """A project whose expected state is known: every update also goes to `doc`."""

    def __init__(self, store: DocumentStore, project_id: str = "film") -> None:
        self.store = store
        self.project_id = project_id
        self.doc = Doc()
        self._updates: list[bytes] = []
        self._subscription = self.doc.observe(lambda event: self._updates.append(event.update))
        self._count = 0

    async def create(self) -> None:
        update = initial_update("film", 10, "USD", {})
        self.doc.apply_update(update)
        self._updates.clear()
        await self.store.create_project(self.project_id, "film", update, "t")

    async def write(self, count: int, batch: int = 1) -> None:
        shots = self.doc.get("shots", type=Map)
        for _ in range(count):
            shots[f"S{self._count}"] = Map({"order": self._count})
            self._count += 1
        while self._updates:
            chunk, self._updates = self._updates[:batch], self._updates[batch:]
            await self.store.append([PendingAppend(self.project_id, u, "t") for u in chunk])

    async def assert_loads_to_expected(self, store: DocumentStore | None = None) -> None:
        stored = await (store or self.store).load(self.project_id)
        assert doc_to_json(replay(stored)) == doc_to_json(self.doc)


async def snapshot_count(store: DocumentStore, project_id: str = "film") -> int:
    return await store.db.fetchval(
        "SELECT count(*) FROM doc_snapshots WHERE project_id = $1", project_id
    )


async def test_crash_after_taking_the_lease(store: DocumentStore) -> None:
    project = Project(store)
    await project.create()
    await project.write(30)
    assert (await take_fence(store, "crashed", LONG)).epoch == 1
    # ...crash. Nothing else happened: the project loads, writes go on.
    await project.write(5)
    await project.assert_loads_to_expected()
    skipped = await compact(store, "film", timedelta(0))
    assert skipped.skipped == "another compactor holds the lease"
    assert await snapshot_count(store) == 0
    # Once the crashed holder's lease expires, the next compaction does the work.
    await expire_fences(store)
    done = await compact(store, "film", timedelta(0))
    assert done.skipped is None and done.upto_seq == 36 and done.merged_rows == 36
    await project.assert_loads_to_expected()


async def test_crash_after_the_snapshot_before_the_prune(store: DocumentStore) -> None:
    project = Project(store)
    await project.create()
    await project.write(30)
    token = await take_fence(store, "crashed", timedelta(0))
    stored = await store.load("film")
    doc = replay(stored)
    snapshot = Snapshot(stored.seq, doc.get_update(), doc.get_state(), utc_now())
    assert await store.save_snapshot("film", snapshot, fence=token)
    # ...crash before pruning, with appends still arriving.
    await project.write(7)
    await project.assert_loads_to_expected()
    loaded = await store.load("film")
    assert loaded.snapshot is not None and loaded.snapshot.upto_seq == 31
    assert [entry.seq for entry in loaded.tail] == list(range(32, 39))
    # A rerun (the crashed lease has expired) merges the new rows and prunes.
    again = await compact(store, "film", timedelta(0))
    assert again.upto_seq == 38 and again.merged_rows == 7 and again.pruned_rows == 38
    await project.assert_loads_to_expected()


async def test_crash_after_the_prune_before_the_release(store: DocumentStore) -> None:
    project = Project(store)
    await project.create()
    await project.write(12)
    token = await take_fence(store, "crashed", timedelta(0))
    stored = await store.load("film")
    doc = replay(stored)
    snapshot = Snapshot(stored.seq, doc.get_update(), doc.get_state(), utc_now())
    await store.save_snapshot("film", snapshot, fence=token)
    assert await store.prune("film", utc_now()) == 13
    # ...crash before releasing the lease.
    await project.assert_loads_to_expected()
    rerun = await compact(store, "film", timedelta(0))
    assert rerun.merged_rows == 0 and rerun.pruned_rows == 0  # nothing left to do
    assert await snapshot_count(store) == 1
    await project.write(3)
    await project.assert_loads_to_expected()


async def test_a_stale_compactor_cannot_save_over_its_successor(store: DocumentStore) -> None:
    project = Project(store)
    await project.create()
    await project.write(10)
    stale = await take_fence(store, "paused", timedelta(0))
    stored = await store.load("film")  # ...then it pauses past its lease
    successor = await compact(store, "film", timedelta(0))
    assert successor.skipped is None and successor.upto_seq == 11
    doc = replay(stored)
    old = Snapshot(stored.seq, doc.get_update(), doc.get_state(), utc_now())
    with pytest.raises(FenceLost):
        await store.save_snapshot("film", old, fence=stale)
    assert await snapshot_count(store) == 1
    await project.assert_loads_to_expected()


async def test_two_compactors_at_once_leave_one_snapshot(pg_url: str, tmp_path: Path) -> None:
    """Two pools are two sessions, as two processes would be; appends go on meanwhile."""
    first = make_store(pg_url, tmp_path, pool_size=2)
    second = make_store(pg_url, tmp_path, pool_size=2)
    await first.open(migrate_schema=False)
    await second.open(migrate_schema=False)
    try:
        project = Project(first)
        await project.create()
        await project.write(400, batch=50)
        results = await asyncio.gather(
            compact(first, "film", timedelta(0), holder="one"),
            compact(second, "film", timedelta(0), holder="two"),
            project.write(20),
        )
        outcomes = sorted(r.skipped or "compacted" for r in results[:2])
        assert outcomes == ["another compactor holds the lease", "compacted"]
        assert await snapshot_count(first) == 1
        await project.assert_loads_to_expected(first)
        await project.assert_loads_to_expected(second)
    finally:
        await first.close()
        await second.close()


async def test_two_compact_commands_at_once_leave_one_correct_snapshot(
    pg_url: str, tmp_path: Path
) -> None:
    store = make_store(pg_url, tmp_path, pool_size=2)
    await store.open(migrate_schema=False)
    try:
        project = Project(store)
        await project.create()
        await project.write(3000, batch=500)
        env = {"BLACKBOARD_DATABASE_URL": pg_url}
        outcomes = await asyncio.gather(*(run_cli("compact", "film", env=env) for _ in "ab"))
        for code, _, err in outcomes:
            assert code == 0, err
        assert await snapshot_count(store) == 1
        await project.assert_loads_to_expected()
    finally:
        await store.close()


async def lease_taken(store: DocumentStore, proc: asyncio.subprocess.Process) -> None:
    """Wait until the compaction holds its lease (or is over already)."""

    async def taken() -> None:
        if proc.returncode is not None:
            return
        held = await store.db.fetchval(
            "SELECT count(*) FROM work_fences WHERE name = $1 AND expires_at > $2",
            compaction_fence("film"),
            utc_now(),
        )
        assert held, "the compaction has not taken its lease yet"

    await eventually(taken, timeout=20, interval=0.005)  # fine-grained: its work is short


async def test_compact_killed_at_random_moments_leaves_a_loadable_project(
    pg_url: str, tmp_path: Path
) -> None:
    store = make_store(pg_url, tmp_path, pool_size=2)
    await store.open(migrate_schema=False)
    env = {**os.environ, "BLACKBOARD_DATABASE_URL": pg_url, "BLACKBOARD_HISTORY_RETENTION_S": "0"}
    rng = random.Random(7)
    killed_while_holding_the_lease = 0
    try:
        project = Project(store)
        await project.create()
        for _ in range(6):
            await project.write(2000, batch=500)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "blackboard.web.cli",
                "compact",
                "film",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            # Once it holds the lease, kill it somewhere within its work (0.1-0.3 s here):
            # loading, replaying, saving the snapshot, pruning, releasing.
            await lease_taken(store, proc)
            await asyncio.sleep(rng.uniform(0, 0.3))  # a random moment of its work
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await project.assert_loads_to_expected()
            probe = await Fences(store.db, "probe").acquire(compaction_fence("film"), timedelta(0))
            if probe is None:
                killed_while_holding_the_lease += 1  # it died mid-compaction
                await expire_fences(store)
        assert killed_while_holding_the_lease >= 1
        final = await compact(store, "film", timedelta(0))
        assert final.skipped is None
        loaded = await store.load("film")
        assert loaded.tail == [] and loaded.snapshot is not None
        await project.assert_loads_to_expected()
    finally:
        await store.close()
