"""A scratch file for handing a whole document to the DocWorker's child and back.

Both sides read and write it from a thread or the child, never the event loop; and it is
removed from a thread too: a 20 MB file just written may still be under writeback, and
unlinking it waits for that, which on the event loop would stall every room.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def scratch_file(prefix: str) -> AsyncIterator[Path]:
    """A path (no file yet) in a fresh temporary folder, removed with it afterwards."""
    folder = tempfile.mkdtemp(prefix=prefix)  # an empty folder: a quick system call
    try:
        yield Path(folder) / "document"
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
