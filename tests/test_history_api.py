"""`GET …/history` and `GET …/state?at_seq=|at_time=` on a real server, on both backends,
including what they answer once retention has compacted history away."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from pycrdt import Map

from blackboard.sync.client import Session
from tests.support.api import create_project
from tests.support.cli import run_cli
from tests.support.server import ServerProcess, StartServer


async def write_shots(server: ServerProcess, names: list[str]) -> None:
    async with Session(server.ws, "film") as client:
        shots = client.doc.get("shots", type=Map)
        for name in names:
            shots[name] = Map({"title": name})  # one update (one seq) each
        await client.flush()


async def all_history(http: httpx.AsyncClient, limit: int) -> list[dict]:
    items, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/api/projects/film/history", params=params)).json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_history_and_state_as_of_a_seq_or_a_time(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "film")
    await write_shots(server, ["S0", "S1", "S2", "S3", "S4"])
    await asyncio.sleep(0.05)  # clock time between the commits and `middle`, both sides
    middle = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.05)
    await write_shots(server, ["S5", "S6", "S7", "S8", "S9"])

    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        items = await all_history(http, limit=4)
        assert [item["seq"] for item in items] == list(range(1, 12))
        assert all(item["actor"] == "anonymous" and item["size"] > 0 for item in items)
        assert datetime.fromisoformat(items[0]["created_at"]) <= datetime.now(UTC)

        created = (await http.get("/api/projects/film/state", params={"at_seq": 1})).json()
        assert created["seq"] == 1 and created["doc"]["shots"] == {}
        assert created["doc"]["spec"]["title"] == "film"
        half = (await http.get("/api/projects/film/state", params={"at_seq": 6})).json()
        assert sorted(half["doc"]["shots"]) == ["S0", "S1", "S2", "S3", "S4"]
        by_time = (await http.get("/api/projects/film/state", params={"at_time": middle})).json()
        assert by_time == half
        empty = (await http.get("/api/projects/film/state", params={"at_seq": 0})).json()
        assert empty["doc"]["spec"] == {} and empty["seq"] == 0
        latest = (await http.get("/api/projects/film/state", params={"at_seq": 11})).json()
        assert latest["doc"] == (await http.get("/api/projects/film")).json()["doc"]


async def test_bad_history_requests_are_refused_clearly(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "film")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for params in (
            {},
            {"at_seq": "1", "at_time": "2020-01-01T00:00:00Z"},
            {"at_seq": "-1"},
            {"at_seq": "one"},
            {"at_seq": "2"},  # past the last committed seq (1)
            {"at_time": "yesterday"},
        ):
            response = await http.get("/api/projects/film/state", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"] == "invalid"
        response = await http.get("/api/projects/film/history", params={"cursor": "x"})
        assert response.status_code == 422
        for path in ("/api/projects/nope/history", "/api/projects/nope/state?at_seq=0"):
            response = await http.get(path)
            assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_history_past_retention_answers_410_not_a_wrong_state(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "film")
    await write_shots(server, ["S0", "S1", "S2"])
    await asyncio.sleep(0.05)  # clock time between the commits and `middle`, both sides
    middle = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.05)
    await write_shots(server, ["S3", "S4"])

    # Compact with no retention at all: the log becomes one snapshot at seq 6.
    code, out, err = await run_cli(
        "compact",
        "film",
        "--data-dir",
        str(server.data_dir),
        env={**backend_env, "BLACKBOARD_HISTORY_RETENTION_S": "0"},
    )
    assert code == 0, err
    assert "film: snapshot at seq 6, merged 6 rows" in out and "pruned 6" in out

    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for params in ({"at_seq": 3}, {"at_time": middle}):
            response = await http.get("/api/projects/film/state", params=params)
            assert response.status_code == 410, response.text
            body = response.json()
            assert body["error"] == "history_pruned" and "oldest kept: seq 6" in body["detail"]
        kept = await http.get("/api/projects/film/state", params={"at_seq": 6})
        assert kept.status_code == 200
        assert sorted(kept.json()["doc"]["shots"]) == ["S0", "S1", "S2", "S3", "S4"]
        now = datetime.now(UTC).isoformat()
        assert (await http.get("/api/projects/film/state", params={"at_time": now})).json() == (
            kept.json()
        )
        history = (await http.get("/api/projects/film/history")).json()
        assert history == {"items": [], "next_cursor": None}
