"""A writer process for the concurrent-append test.

    python -m tests.support.appender URL WRITER BATCHES PROJECT...

Appends BATCHES batches, each over a random subset of the projects in a random order
(so writers lock counters in different orders), and prints one JSON line per batch:
`[[project_id, payload, seq], ...]`. The payload `WRITER:BATCH:ROW` identifies the row.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

from blackboard.persistence.factory import make_store
from blackboard.persistence.records import PendingAppend


async def main(url: str, writer: int, batches: int, projects: list[str]) -> None:
    store = make_store(url, Path("."), pool_size=1)
    await store.open(migrate_schema=False)
    rng = random.Random(writer)
    try:
        for number in range(batches):
            chosen = rng.sample(projects, k=rng.randint(1, len(projects)))
            batch = [
                PendingAppend(project_id, f"{writer}:{number}:{row}".encode(), f"w{writer}")
                for project_id in chosen
                for row in range(rng.randint(1, 4))
            ]
            seqs = await store.append(batch)
            lines = [[r.project_id, r.update.decode(), s] for r, s in zip(batch, seqs, strict=True)]
            print(json.dumps(lines), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
