"""The store contract, run on both backends (SQLite and Postgres) so they never drift:
projects, appends and their seqs, loads, snapshots, history, retention, the
compaction lease, status-epoch records and the migration that added them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from blackboard.persistence.clock import utc_now
from blackboard.persistence.compaction import compaction_fence
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.errors import HistoryPruned, ProjectExists, ProjectNotFound
from blackboard.persistence.factory import make_store
from blackboard.persistence.fence import FenceLost, Fences
from blackboard.persistence.log_append import SQLITE_ROWS_PER_INSERT
from blackboard.persistence.records import PendingAppend, Snapshot
from blackboard.persistence.replay import replay
from blackboard.persistence.snapshot_rows import STATE_PIECE_BYTES
from blackboard.schemas.migration_files import migrations_for
from blackboard.schemas.views import doc_to_json
from blackboard.sync.projects.creation import initial_update
from tests.support.backends import create_database, drop_database

ACTOR = "tester"
INITIAL = initial_update("film", 100, "USD", {})  # once: it carries a timestamp


def shot_updates(count: int, prefix: str = "S") -> list[bytes]:
    """`count` updates of one writer, each adding one shot; each depends on the last."""
    writer = Doc()
    updates: list[bytes] = []
    subscription = writer.observe(lambda event: updates.append(event.update))
    shots = writer.get("shots", type=Map)
    for i in range(count):
        shots[f"{prefix}{i}"] = Map({"order": i})
    writer.unobserve(subscription)
    return updates


def expected_at(seq: int, updates: list[bytes]) -> dict:
    """The JSON of a project created by `create` (seq 1) then given `updates` (seq 2...)."""
    doc = Doc()
    if seq >= 1:
        doc.apply_update(INITIAL)
    for update in updates[: max(0, seq - 1)]:
        doc.apply_update(update)
    return doc_to_json(doc)


async def create(store: DocumentStore, project_id: str = "film") -> None:
    await store.create_project(project_id, "film", INITIAL, ACTOR)


async def append_each(store: DocumentStore, project_id: str, updates: list[bytes]) -> list[int]:
    seqs = []
    for update in updates:
        seqs += await store.append([PendingAppend(project_id, update, ACTOR)])
    return seqs


async def snapshot_now(store: DocumentStore, project_id: str) -> int:
    """What compaction writes: the replayed state at the current seq."""
    stored = await store.load(project_id)
    doc = replay(stored)
    await store.save_snapshot(
        project_id, Snapshot(stored.seq, doc.get_update(), doc.get_state(), utc_now())
    )
    return stored.seq


async def test_create_get_and_list_projects(store: DocumentStore) -> None:
    for project_id in ("b", "a", "c"):
        await create(store, project_id)
    with pytest.raises(ProjectExists):
        await create(store, "a")
    record = await store.get_project("a")
    assert record is not None and record.seq == 1 and record.title == "film"
    assert await store.get_project("missing") is None
    first = await store.list_projects(2, None)
    assert [p.project_id for p in first] == ["a", "b"]
    rest = await store.list_projects(2, first[-1].project_id)
    assert [p.project_id for p in rest] == ["c"]


async def test_append_gives_gap_free_seqs_per_project_in_batch_order(store: DocumentStore) -> None:
    await create(store, "p1")
    await create(store, "p2")
    batch = [
        PendingAppend("p1", b"\x00" * 3, "a"),
        PendingAppend("p1", b"\x00" * 5, "b"),
        PendingAppend("p2", b"\x00" * 7, "c"),
        PendingAppend("p2", b"\x00" * 9, "d"),
        PendingAppend("p2", b"\x00" * 11, "e"),
    ]
    assert await store.append(batch) == [2, 3, 2, 3, 4]
    assert await store.append([PendingAppend("p2", b"\x01", "f")]) == [5]
    assert (await store.get_project("p1")).seq == 3  # type: ignore[union-attr]
    history = await store.history("p2", 0, 10)
    assert [(h.seq, h.actor, h.size) for h in history[1:]] == [
        (2, "c", 7),
        (3, "d", 9),
        (4, "e", 11),
        (5, "f", 1),
    ]


async def test_a_batch_larger_than_one_insert_keeps_every_row_in_order(
    store: DocumentStore,
) -> None:
    """SQLite inserts up to SQLITE_ROWS_PER_INSERT rows per statement: a batch spanning
    several statements and projects stores each row once, in order."""
    await create(store, "p1")
    await create(store, "p2")
    rows = 2 * SQLITE_ROWS_PER_INSERT + 7
    batch = [PendingAppend("p1", i.to_bytes(4, "big"), f"a{i}") for i in range(rows)]
    batch.append(PendingAppend("p2", b"last", "b"))
    assert await store.append(batch) == [*range(2, rows + 2), 2]
    log = await store.read_log("p1", 1, rows + 10)
    assert [(e.seq, e.update, e.actor) for e in log] == [
        (i + 2, i.to_bytes(4, "big"), f"a{i}") for i in range(rows)
    ]
    assert [e.update for e in await store.read_log("p2", 1, 10)] == [b"last"]


async def test_append_to_a_missing_project_stores_nothing(store: DocumentStore) -> None:
    await create(store, "real")
    batch = [PendingAppend("ghost", b"\x00", ACTOR), PendingAppend("real", b"\x00", ACTOR)]
    with pytest.raises(ProjectNotFound) as raised:
        await store.append(batch)
    assert raised.value.project_id == "ghost"
    assert (await store.get_project("real")).seq == 1  # type: ignore[union-attr]
    assert len(await store.history("real", 0, 10)) == 1


async def test_append_that_fails_part_way_stores_nothing(store: DocumentStore) -> None:
    """A row that cannot be inserted (its seq taken by a row written behind the store's
    back) fails the whole batch: no earlier row of it stays, no counter moves. (SQLite's
    statements roll the whole transaction back rather than themselves alone.)"""
    await create(store, "p1")
    await create(store, "p2")
    await store.db.execute(
        'INSERT INTO doc_updates (project_id, seq, "update", actor, status_epochs, created_at)'
        " VALUES ($1, 3, $2, $3, $4, $5)",
        "p2",
        b"squatter",
        ACTOR,
        b"",
        utc_now(),
    )
    batch = [PendingAppend(p, b"\x00", ACTOR) for p in ("p1", "p1", "p2", "p2", "p2")]
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await store.append(batch)
    for project_id in ("p1", "p2"):
        assert (await store.get_project(project_id)).seq == 1  # type: ignore[union-attr]
    assert [e.seq for e in await store.read_log("p1", 0, 10)] == [1]
    await store.append([PendingAppend("p1", b"\x01", ACTOR)])  # the writer goes on
    assert (await store.get_project("p1")).seq == 2  # type: ignore[union-attr]


async def test_append_refuses_a_project_split_across_a_batch(store: DocumentStore) -> None:
    await create(store, "p1")
    await create(store, "p2")
    split = [PendingAppend(p, b"\x00", ACTOR) for p in ("p1", "p2", "p1")]
    with pytest.raises(ValueError, match="contiguous"):
        await store.append(split)
    assert (await store.get_project("p1")).seq == 1  # type: ignore[union-attr]


async def test_load_replays_to_the_same_document(store: DocumentStore) -> None:
    await create(store)
    updates = shot_updates(20)
    await append_each(store, "film", updates)
    stored = await store.load("film")
    assert stored.snapshot is None and stored.seq == 21
    assert [e.seq for e in stored.tail] == list(range(1, 22))
    assert doc_to_json(replay(stored)) == expected_at(21, updates)
    with pytest.raises(ProjectNotFound):
        await store.load("missing")


async def test_load_at_uses_the_newest_snapshot_at_or_before(store: DocumentStore) -> None:
    await create(store)
    updates = shot_updates(30)
    await append_each(store, "film", updates[:10])
    assert await snapshot_now(store, "film") == 11
    await append_each(store, "film", updates[10:])
    for seq in (0, 1, 5, 11, 12, 25, 31):
        stored = await store.load_at("film", seq)
        assert stored.seq == seq
        assert (stored.snapshot is not None) == (seq >= 11)
        assert doc_to_json(replay(stored)) == expected_at(seq, updates)
    # Past the end: everything there is.
    assert (await store.load_at("film", 1000)).seq == 31


async def test_save_snapshot_is_idempotent_per_seq(store: DocumentStore) -> None:
    await create(store)
    stored = await store.load("film")
    doc = replay(stored)
    snapshot = Snapshot(1, doc.get_update(), doc.get_state(), utc_now())
    assert await store.save_snapshot("film", snapshot) is True
    assert await store.save_snapshot("film", snapshot) is False


def _state(size: int, compressible: bool) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size] if compressible else os.urandom(size)


@pytest.mark.parametrize(
    ("size", "compressible"),
    [
        (3_000_000, False),
        (3_000_000, True),  # Postgres keeps it compressed: its pieces come from one copy
        (STATE_PIECE_BYTES, False),  # the largest read and written in one piece
        (STATE_PIECE_BYTES + 1, False),
        (2 * STATE_PIECE_BYTES, False),
    ],
)
async def test_a_big_snapshot_reads_back_whole_and_a_refused_one_writes_nothing(
    store: DocumentStore, size: int, compressible: bool
) -> None:
    # Opaque bytes suffice: the store never applies a snapshot. SQLite writes the state
    # into room made for it after the insert; a refused insert must not write anywhere.
    # Postgres sends and reads a state above STATE_PIECE_BYTES in pieces.
    big = Snapshot(1, _state(size, compressible), b"sv-a", utc_now(), b"epochs-a")
    other = Snapshot(1, b"other-state", b"sv-b", utc_now(), b"epochs-b")
    await create(store, "film")
    await create(store, "ads")
    assert await store.save_snapshot("film", big) is True
    assert await store.save_snapshot("ads", other) is True
    refused = Snapshot(1, os.urandom(len(big.state)), b"sv-c", utc_now(), b"epochs-c")
    assert await store.save_snapshot("film", refused) is False
    assert await store.save_snapshot("ads", refused) is False
    for project_id, saved in (("film", big), ("ads", other)):
        snapshot = (await store.load(project_id)).snapshot
        assert snapshot is not None
        assert (snapshot.state, snapshot.state_vector, snapshot.status_epochs) == (
            saved.state,
            saved.state_vector,
            saved.status_epochs,
        )
        assert snapshot.created_at == saved.created_at


@pytest.mark.parametrize("size", [9, STATE_PIECE_BYTES + 1])
async def test_a_snapshot_whose_write_fails_leaves_no_row(store: DocumentStore, size: int) -> None:
    # A state that is not bytes fails its write: on SQLite after the insert made room for
    # it (the blob write refuses a str); on Postgres at the insert, or for a big one in
    # the middle of its COPY, after the temporary table and the stream's first chunk.
    # Either way the whole transaction goes, so the seq is free for the next save.
    await create(store)
    broken = Snapshot(1, "x" * size, b"sv", utc_now())  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own error
        await store.save_snapshot("film", broken)
    assert (await store.load("film")).snapshot is None
    good = Snapshot(1, b"s" * size, b"sv", utc_now())
    assert await store.save_snapshot("film", good) is True
    assert (await store.load("film")).snapshot == good


async def test_big_snapshot_saves_and_loads_cut_short_leave_the_store_whole(
    store: DocumentStore,
) -> None:
    """A save or a load of a big snapshot cancelled part-way (a load's timeout, a
    shutdown), at whatever step it had reached: a save is stored whole or not at all,
    and the store serves the next ones as if nothing had happened."""
    await create(store)
    saved: dict[int, bytes] = {}
    for seq, timeout in enumerate((0.0005, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1), start=1):
        snapshot = Snapshot(seq, os.urandom(3 * STATE_PIECE_BYTES), b"sv", utc_now())
        saved[seq] = snapshot.state
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(store.save_snapshot("film", snapshot), timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(store.load("film"), timeout)
    for seq, state in saved.items():
        found = (await store.load_at("film", seq)).snapshot
        if found is not None and found.upto_seq == seq:
            assert found.state == state  # never a part of it
    last = Snapshot(len(saved) + 1, os.urandom(3 * STATE_PIECE_BYTES), b"sv", utc_now())
    assert await store.save_snapshot("film", last) is True
    loaded = (await store.load("film")).snapshot
    assert loaded is not None and (loaded.upto_seq, loaded.state) == (last.upto_seq, last.state)


async def test_history_pages_and_seq_at_time(store: DocumentStore) -> None:
    await create(store)
    await append_each(store, "film", shot_updates(4))
    middle = utc_now()
    await asyncio.sleep(0.01)  # clock time between `middle` and the next rows
    await append_each(store, "film", shot_updates(3, prefix="T"))
    page = await store.history("film", 0, 3)
    assert [h.seq for h in page] == [1, 2, 3]
    assert [h.seq for h in await store.history("film", 3, 100)] == [4, 5, 6, 7, 8]
    assert all(h.actor == ACTOR and h.size > 0 for h in page)
    assert page[0].created_at <= page[-1].created_at
    assert await store.seq_at_time("film", middle) == 5
    assert await store.seq_at_time("film", utc_now()) == 8
    assert await store.seq_at_time("film", middle - timedelta(days=1)) == 0


async def test_seq_at_time_reads_back_a_window_at_a_time(
    store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same answers when each query reads a window of 3 seqs, with the log's
    start pruned: the last row at or before the time, or 0 before the first retained."""
    monkeypatch.setattr("blackboard.persistence.document_store.SEQ_AT_TIME_WINDOW", 3)
    await create(store)
    updates = shot_updates(12)
    await append_each(store, "film", updates[:4])  # 2..5
    await snapshot_now(store, "film")  # at 5
    times = []
    for update in updates[4:]:  # 6..13, each after a clock tick
        await asyncio.sleep(0.002)
        times.append(utc_now())
        await asyncio.sleep(0.002)
        await append_each(store, "film", [update])
    assert await store.prune("film", times[0]) == 5  # the rows up to the snapshot go
    # Before row 6 no retained row tells (the history layer then says HistoryPruned).
    assert [await store.seq_at_time("film", t) for t in times] == [0, *range(6, 13)]
    assert await store.seq_at_time("film", utc_now()) == 13
    assert await store.seq_at_time("film", times[0] - timedelta(days=1)) == 0
    assert await store.seq_at_time("missing", utc_now()) == 0


async def test_prune_keeps_every_state_since_the_cutoff(store: DocumentStore) -> None:
    await create(store)
    updates = shot_updates(40)
    await append_each(store, "film", updates[:10])
    await snapshot_now(store, "film")  # at 11
    await append_each(store, "film", updates[10:20])
    await snapshot_now(store, "film")  # at 21
    await append_each(store, "film", updates[20:25])  # 22..26
    await asyncio.sleep(0.01)  # clock time between the rows and the cutoff, both sides
    cutoff = utc_now()
    await asyncio.sleep(0.01)
    await append_each(store, "film", updates[25:])  # 27..41
    await snapshot_now(store, "film")  # at 41, newer than the cutoff's last row

    # Rows up to the snapshot at 21 go (the newest snapshot at or below row 26, the last
    # one older than the cutoff); the snapshot at 11 goes; 22.. stay.
    assert await store.prune("film", cutoff) == 21
    assert await store.oldest_retained_seq("film") == 21
    for seq in (21, 26, 27, 35, 41):
        assert doc_to_json(replay(await store.load_at("film", seq))) == expected_at(seq, updates)
    for seq in (1, 11, 15, 20):
        with pytest.raises(HistoryPruned):
            await store.load_at("film", seq)
    assert doc_to_json(replay(await store.load("film"))) == expected_at(41, updates)
    assert await store.prune("film", cutoff) == 0  # a rerun changes nothing


async def test_prune_keeps_snapshots_their_own_size_of_log_apart(store: DocumentStore) -> None:
    """Of the three newest snapshots, the middle one goes when the log between the other
    two is smaller than it, and stays when that log is at least its size; every state
    since stays rebuildable from the log."""
    writer = Doc()
    updates: list[bytes] = []
    subscription = writer.observe(lambda event: updates.append(event.update))
    shots = writer.get("shots", type=Map)
    shots["big"] = Map({"prompt": "x" * 4000})  # seq 2: every snapshot holds it
    for i in range(20):  # 3..22: small
        shots[f"S{i}"] = Map({"order": i})
    for i in range(5):  # 23..27: more log than a snapshot's size
        shots[f"L{i}"] = Map({"prompt": str(i) * 1000})
    writer.unobserve(subscription)
    long_ago = utc_now() - timedelta(days=1)  # no snapshot is older: only thinning
    await create(store)

    async def snapshot_at(seq: int) -> list[int]:
        """Append up to `seq`, snapshot, prune; the seqs of the snapshots left."""
        stored = await store.get_project("film")
        assert stored is not None
        await append_each(store, "film", updates[stored.seq - 1 : seq - 1])
        await snapshot_now(store, "film")
        assert await store.prune("film", long_ago) == 0
        rows = await store.db.fetch(
            "SELECT upto_seq FROM doc_snapshots WHERE project_id = $1 ORDER BY upto_seq", "film"
        )
        return [row[0] for row in rows]

    assert await snapshot_at(12) == [12]
    assert await snapshot_at(17) == [12, 17]
    # 12..22 holds ten small rows, less than the snapshot at 17: it goes.
    assert await snapshot_at(22) == [12, 22]
    # 12..27 holds those and 5,000 bytes more, more than the snapshot at 22: it stays.
    assert await snapshot_at(27) == [12, 22, 27]
    for seq in range(28):
        assert doc_to_json(replay(await store.load_at("film", seq))) == expected_at(seq, updates)


async def test_prune_goes_by_the_snapshots_times(store: DocumentStore) -> None:
    """A snapshot taken after the cutoff is no base yet, even when every row it covers
    is older: its rows go once it is older than the cutoff too."""
    await create(store)
    await append_each(store, "film", shot_updates(5))  # 2..6
    await asyncio.sleep(0.01)
    cutoff = utc_now()
    await asyncio.sleep(0.01)
    await snapshot_now(store, "film")  # at 6
    assert await store.prune("film", cutoff) == 0
    assert await store.prune("film", utc_now() + timedelta(seconds=1)) == 6
    assert await store.oldest_retained_seq("film") == 6


async def test_prune_without_a_snapshot_deletes_nothing(store: DocumentStore) -> None:
    await create(store)
    await append_each(store, "film", shot_updates(5))
    assert await store.prune("film", utc_now() + timedelta(days=1)) == 0
    assert await store.oldest_retained_seq("film") == 0
    assert len((await store.load("film")).tail) == 6


async def test_prune_everything_old_leaves_the_newest_snapshot(store: DocumentStore) -> None:
    await create(store)
    updates = shot_updates(8)
    await append_each(store, "film", updates)
    await snapshot_now(store, "film")
    assert await store.prune("film", utc_now() + timedelta(seconds=1)) == 9
    stored = await store.load("film")
    assert stored.tail == [] and stored.snapshot is not None and stored.seq == 9
    assert await store.oldest_retained_seq("film") == 9
    assert doc_to_json(replay(stored)) == expected_at(9, updates)
    # Appends continue from the counter, not from what is left in the log.
    assert await store.append([PendingAppend("film", updates[0], ACTOR)]) == [10]


async def test_a_snapshot_is_saved_only_under_a_current_fence(store: DocumentStore) -> None:
    await create(store)
    name = compaction_fence("film")
    stale = await Fences(store.db, "paused").acquire(name, timedelta(0))  # expires at once
    current = await Fences(store.db, "next").acquire(name, timedelta(minutes=5))
    assert stale is not None and current is not None and current.epoch == stale.epoch + 1
    doc = replay(await store.load("film"))
    snapshot = Snapshot(1, doc.get_update(), doc.get_state(), utc_now())
    with pytest.raises(FenceLost):
        await store.save_snapshot("film", snapshot, fence=stale)
    assert (await store.load("film")).snapshot is None
    assert await store.save_snapshot("film", snapshot, fence=current) is True


async def test_status_epochs_are_stored_with_their_rows(store: DocumentStore) -> None:
    await create(store)
    updates = shot_updates(4)
    # Opaque bytes to the store, with a NUL and a high byte to catch any text handling.
    batch = [
        PendingAppend("film", updates[0], ACTOR, b"\x00a"),
        PendingAppend("film", updates[1], ACTOR),  # nothing recorded
        PendingAppend("film", updates[2], ACTOR, b"\xffbc"),
    ]
    assert await store.append(batch) == [2, 3, 4]
    stored = await store.load("film")
    assert [e.status_epochs for e in stored.tail] == [b"", b"\x00a", b"", b"\xffbc"]
    assert stored.status_epochs == b"\x00a\xffbc"
    assert [e.status_epochs for e in await store.read_log("film", 2, 10)] == [b"", b"\xffbc"]

    doc = replay(stored)
    snapshot = Snapshot(4, doc.get_update(), doc.get_state(), utc_now(), b"snap")
    assert await store.save_snapshot("film", snapshot) is True
    await store.append([PendingAppend("film", updates[3], ACTOR, b"tail")])
    stored = await store.load("film")
    assert stored.snapshot is not None and stored.snapshot.status_epochs == b"snap"
    # The whole state's record: the snapshot's first, then the tail's in seq order.
    assert stored.status_epochs == b"snaptail"
    assert (await store.load_at("film", 3)).status_epochs == b"\x00a"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0007_gives_existing_rows_an_empty_record(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await create_database(migrated=False) if backend == "postgres" else None
    store = make_store(url, tmp_path)
    try:
        # A database as 0006 left it, with rows written by that version...
        before = [m for m in migrations_for(backend) if m.version < 7]
        monkeypatch.setattr("blackboard.persistence.migrator.migrations_for", lambda _: before)
        await store.open(migrate_schema=True)
        now = utc_now()
        await store.db.execute(
            "INSERT INTO projects (project_id, title, seq, created_at) VALUES ('film', 'f', 1, $1)",
            now,
        )
        await store.db.execute(
            'INSERT INTO doc_updates (project_id, seq, "update", actor, created_at)'
            " VALUES ('film', 1, $1, $2, $3)",
            INITIAL,
            ACTOR,
            now,
        )
        doc = Doc()
        doc.apply_update(INITIAL)
        await store.db.execute(
            "INSERT INTO doc_snapshots (project_id, upto_seq, state, state_vector, created_at)"
            " VALUES ('film', 1, $1, $2, $3)",
            doc.get_update(),
            doc.get_state(),
            now,
        )
        await store.close()
        # ... then migrated to the newest schema: both rows gain an empty record.
        monkeypatch.undo()
        await store.open(migrate_schema=True)
        await store.append([PendingAppend("film", shot_updates(1)[0], ACTOR, b"new")])
        stored = await store.load("film")
        assert stored.snapshot is not None and stored.snapshot.status_epochs == b""
        assert stored.snapshot.state == doc.get_update()  # 0009 moved it on SQLite
        log = await store.read_log("film", 0, 10)
        assert [(e.seq, e.actor, e.status_epochs) for e in log] == [
            (1, ACTOR, b""),
            (2, ACTOR, b"new"),
        ]
        assert log[0].update == INITIAL and log[0].created_at == now  # 0010 moved it on SQLite
    finally:
        await store.close()
        if url:
            await drop_database(url)
