"""A failed load is an error, never an empty document (Hocuspocus #382)."""

from __future__ import annotations

import sqlite3

import httpx
import websockets

from tests.support.api import create_project
from tests.support.server import ServerProcess


async def test_corrupt_log_row_refuses_to_serve_and_changes_nothing(server: ServerProcess) -> None:
    await create_project(server, "broken")
    await server.stop()
    db_path = server.data_dir / "blackboard.db"
    with sqlite3.connect(db_path) as db:
        db.execute(
            'INSERT INTO doc_updates (project_id, seq, "update", actor, created_at)'
            " VALUES ('broken', 2, x'ff00ff', 'vandal', '2026-01-01T00:00:00.000000Z')"
        )
        db.execute("UPDATE projects SET seq = 2 WHERE project_id = 'broken'")
        stored_before = db.execute('SELECT seq, "update" FROM doc_updates ORDER BY seq').fetchall()
    await server.restart()

    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get("/api/projects/broken")
        state = await http.get("/api/projects/broken/state", params={"at_seq": 2})
    assert response.status_code == 500
    assert response.json()["error"] == "load_failed"
    assert state.status_code == 500  # its replay, off the loop, fails the same way
    assert state.json()["error"] == "load_failed"

    async with websockets.connect(f"{server.ws}/sync/broken", compression=None) as ws:
        try:
            frame = await ws.recv()
        except websockets.ConnectionClosed:
            frame = None
        assert frame is None, "no document byte may be sent"
    assert ws.close_code == 1011

    await server.stop()  # shutting down must not "repair" the project with an empty doc
    with sqlite3.connect(db_path) as db:
        assert db.execute('SELECT seq, "update" FROM doc_updates ORDER BY seq').fetchall() == (
            stored_before
        )
        assert db.execute("SELECT count(*) FROM doc_snapshots").fetchone()[0] == 0
