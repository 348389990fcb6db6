"""Compaction's replay runs in the DocWorker's child process, not in the serving one; a
fold that fails there is reported and changes nothing; a child that dies is replaced."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from bench.procstat import cpu_seconds
from blackboard.persistence.compaction import compact, compaction_fence
from blackboard.persistence.doc_worker import PIPE_BYTES, DocWorker
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.fence import Fences
from blackboard.persistence.records import PendingAppend
from blackboard.persistence.replay import CorruptDocument, fold, parts
from tests.support.api import eventually
from tests.support.server import StartServer
from tests.test_compaction_fencing import Project, snapshot_count

# Enough rows that folding them is clearly measurable CPU (about 0.1 s).
ROWS = 12_000


@pytest.fixture
async def worker() -> AsyncIterator[DocWorker]:
    worker = DocWorker()
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def descendants(pid: int) -> dict[int, int]:
    """Every live process below `pid`, with its parent (the forkserver is a child, the
    worker it forked a grandchild)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        children = {child: parent for child, parent in parents.items() if parent in frontier}
        found.update(children)
        frontier = list(children)
    return found


def cpu_of(pids: list[int]) -> dict[int, float]:
    spent = {}
    for pid in pids:
        try:
            spent[pid] = cpu_seconds(pid)
        except OSError:
            continue  # exited meanwhile
    return spent


async def test_compaction_replays_in_the_child_process(
    store: DocumentStore, worker: DocWorker
) -> None:
    project = Project(store)
    await project.create()
    await project.write(ROWS, batch=2000)
    stored = await store.load("film")
    # What the same fold costs here: this thread's CPU only, as the process's also
    # counts whatever other threads of the suite do meanwhile; the least of three, as
    # a busy machine adds to it (a CI run measured 0.12 s for a fold of about 0.05 s).
    costs = []
    for _ in range(3):
        started = time.thread_time()
        fold(parts(stored))
        costs.append(time.thread_time() - started)
    in_process = min(costs)

    children = list(descendants(os.getpid()))
    assert children, "the worker's child process is running"
    before = cpu_of(children)
    result = await compact(store, "film", timedelta(0), folder=worker.fold)
    after = cpu_of(children)

    assert result.skipped is None and result.merged_rows == ROWS + 1
    in_children = sum(after[pid] - before[pid] for pid in after if pid in before)
    assert in_children >= in_process / 2, (in_children, in_process)
    await project.assert_loads_to_expected()


async def test_a_failed_fold_is_reported_and_changes_nothing(
    store: DocumentStore, worker: DocWorker
) -> None:
    project = Project(store)
    await project.create()
    await project.write(10)
    await store.append([PendingAppend("film", b"\xff\x00\xff", "vandal")])  # seq 12
    before = await store.load("film")

    with pytest.raises(CorruptDocument, match="log row 12 does not apply"):
        await compact(store, "film", timedelta(0), folder=worker.fold)

    assert await snapshot_count(store) == 0
    after = await store.load("film")
    assert [e.seq for e in after.tail] == [e.seq for e in before.tail] == list(range(1, 13))
    probe = await Fences(store.db, "probe").acquire(compaction_fence("film"), timedelta(0))
    assert probe is not None, "the failed compactor released its fence"
    # The child survived the failure: the next fold works.
    state, _ = await worker.fold(parts(await store.load_at("film", 11)))
    assert state


async def test_a_dead_child_is_replaced(store: DocumentStore, worker: DocWorker) -> None:
    project = Project(store)
    await project.create()
    await project.write(5)
    workers = [pid for pid, parent in descendants(os.getpid()).items() if parent != os.getpid()]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    stored = await store.load("film")
    with pytest.raises(Exception, match="terminated abruptly"):
        await worker.fold(parts(stored))
    result = await compact(store, "film", timedelta(0), folder=worker.fold)
    assert result.skipped is None and result.merged_rows == 6
    await project.assert_loads_to_expected()


async def test_a_fold_overrunning_the_lease_writes_nothing(
    store: DocumentStore, worker: DocWorker, caplog: pytest.LogCaptureFixture
) -> None:
    project = Project(store)
    await project.create()
    await project.write(3000, batch=500)
    with caplog.at_level(logging.WARNING, logger="blackboard.persistence.doc_worker"):
        with pytest.raises(TimeoutError):  # the job is under way when the lease runs out
            lease = timedelta(milliseconds=1)
            await compact(store, "film", timedelta(0), lease_ttl=lease, folder=worker.fold)
    assert "a job was cancelled" in caplog.text
    assert await snapshot_count(store) == 0
    probe = await Fences(store.db, "probe").acquire(compaction_fence("film"), timedelta(0))
    assert probe is not None, "the fence was released"
    # The next job gets a fresh child, and finishes.
    result = await compact(store, "film", timedelta(0), folder=worker.fold)
    assert result.skipped is None and result.merged_rows == 3001
    await project.assert_loads_to_expected()


async def test_a_killed_server_leaves_no_process_behind(start_server: StartServer) -> None:
    """SIGKILL gives the server no chance to stop its pool: the child, the forkserver and
    the resource tracker must still go (each start otherwise leaked about 40 MB)."""
    server = await start_server()
    assert server.proc is not None
    pid = server.proc.pid

    def started() -> None:
        assert len(descendants(pid)) >= 3  # the tracker, the forkserver, the worker child

    await eventually(started)
    helpers = list(descendants(pid))
    await server.kill()

    def gone() -> None:
        assert [p for p in helpers if Path(f"/proc/{p}").exists()] == []

    await eventually(gone, timeout=10)


async def test_a_big_snapshot_goes_to_the_child_and_back_through_a_file(
    worker: DocWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not through the pipe: pickling 20 MB holds the event loop for about 10 ms. The
    fold is the same as in this process, and the scratch file is gone afterwards."""
    doc = Doc()
    shots = doc.get("shots", type=Map)
    with doc.transaction():
        for n in range(200):
            shots[f"S{n}"] = Map({"title": "x" * 2000})
    snapshot = doc.get_update()
    assert len(snapshot) > PIPE_BYTES
    edit = Doc()
    edit.apply_update(snapshot)
    updates: list[bytes] = []
    edit.observe(lambda event: updates.append(event.update))
    edit.get("shots", type=Map)["S1"]["title"] = "changed"
    updates_in = [("snapshot", snapshot), *(("row", update) for update in updates)]
    pickled: list[int] = []
    real_run = worker.run

    async def run(function: Any, *args: Any) -> Any:
        pickled.append(len(pickle.dumps(args)))
        return await real_run(function, *args)

    monkeypatch.setattr(worker, "run", run)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    state, state_vector = await worker.fold(updates_in)
    assert (state, state_vector) == fold(updates_in)
    assert pickled and max(pickled) < PIPE_BYTES
    assert os.listdir(tmp_path) == []
