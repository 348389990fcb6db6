"""Creating and listing projects over HTTP."""

from __future__ import annotations

import httpx

from tests.support.api import create_project
from tests.support.server import ServerProcess


async def test_projects_list_in_pages_and_refuse_bad_input(server: ServerProcess) -> None:
    for name in ("c", "a", "e", "b", "d"):
        await create_project(server, f"film-{name}")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        seen, cursor, pages = [], "", 0
        while True:
            page = (await http.get("/api/projects", params={"limit": 2, "cursor": cursor})).json()
            seen += [item["project_id"] for item in page["items"]]
            pages += 1
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert seen == [f"film-{n}" for n in "abcde"] and pages == 3

        bad_limit = await http.get("/api/projects", params={"limit": 0})
        assert bad_limit.status_code == 422 and bad_limit.json()["error"] == "invalid"
        again = await http.post(
            "/api/projects", json={"project_id": "film-a", "title": "t", "budget_total": 1}
        )
        assert again.status_code == 409 and again.json()["error"] == "exists"
        bad_id = await http.post(
            "/api/projects", json={"project_id": "-bad id", "title": "t", "budget_total": 1}
        )
        assert bad_id.status_code == 422
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        listed = (await http.get("/api/projects")).json()
    assert len(listed["items"]) == 5 and listed["next_cursor"] is None
