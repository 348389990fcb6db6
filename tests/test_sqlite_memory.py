"""The embedded database keeps no copy of the updates it stored. sqlite3 caches a
statement per SQL text, one per group-commit batch size, and each kept the blobs it was
last run with: batches of 16 KiB updates left the server 80+ MiB larger for good."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

from blackboard.persistence.factory import make_store
from blackboard.persistence.records import PendingAppend
from blackboard.sync.projects.creation import initial_update

MiB = 1024 * 1024


def sqlite_memory_used() -> int:
    """What SQLite has allocated in this process (the library sqlite3 is linked with)."""
    library = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library.sqlite3_memory_used()


async def test_batches_of_large_updates_leave_no_copies_held(tmp_path: Path) -> None:
    store = make_store(None, tmp_path)
    await store.open(migrate_schema=True)
    try:
        await store.create_project("film", "film", initial_update("film", 100, "USD", {}), "t")
        before = sqlite_memory_used()
        sizes = range(1, 61)  # 1,830 rows of 16 KiB: 29 MiB, a statement per batch size
        for size in sizes:
            update = bytes([size]) * 16384
            await store.append([PendingAppend("film", update, "t")] * size)
        held = sqlite_memory_used() - before
        # Before: 32 MiB held, every batch's copy. Now 3-4 MiB: the statements' own code
        # and the page cache (2 MiB).
        assert held < 6 * MiB, f"SQLite holds {held / MiB:.1f} MiB more"
        rows = await store.read_log("film", 1, 2000)  # every row stored once, in order
        assert [len(row.update) for row in rows] == [16384] * sum(sizes)
        assert rows[-1].update == bytes([60]) * 16384
    finally:
        await store.close()
