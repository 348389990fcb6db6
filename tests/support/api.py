"""Talking to a running server over HTTP, and waiting for convergence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.support.server import ServerProcess


def bearer(token: str | None) -> dict[str, str]:
    """Request headers carrying `token` (none for an open server)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def create_project(
    server: ServerProcess, project_id: str, *, token: str | None = None, **extra: object
) -> dict:
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=bearer(token)) as http:
        body = {"project_id": project_id, "title": project_id, "budget_total": 1000, **extra}
        response = await http.post("/api/projects", json=body)
        assert response.status_code == 201, response.text
        return response.json()


async def project_json(server: ServerProcess, project_id: str, token: str | None = None) -> dict:
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=bearer(token)) as http:
        response = await http.get(f"/api/projects/{project_id}")
        assert response.status_code == 200, response.text
        return response.json()


async def history(
    server: ServerProcess, project_id: str, token: str | None = None
) -> list[tuple[int, str]]:
    """(seq, actor) of every log entry, from `GET …/history`, page by page."""
    entries: list[tuple[int, str]] = []
    cursor = ""
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=bearer(token)) as http:
        while True:
            response = await http.get(
                f"/api/projects/{project_id}/history", params={"limit": 1000, "cursor": cursor}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            entries.extend((item["seq"], item["actor"]) for item in page["items"])
            if page["next_cursor"] is None:
                return entries
            cursor = page["next_cursor"]


async def eventually(
    check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Retry an async or sync assertion every `interval` until it passes or `timeout` runs
    out (then its last AssertionError is raised): the one way tests wait for a condition."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                await result
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(interval)


def holds(condition: Callable[[], bool]) -> Callable[[], None]:
    """`condition` as an assertion for `eventually` to retry."""

    def check() -> None:
        assert condition()

    return check


async def committed_doc(server: ServerProcess, project_id: str, token: str | None = None) -> dict:
    """The document as the log holds it: its state as of the last committed seq (the live
    document of `project_json` may be ahead of the log)."""
    seq = (await project_json(server, project_id, token))["seq"]
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=bearer(token)) as http:
        response = await http.get(f"/api/projects/{project_id}/state", params={"at_seq": seq})
        assert response.status_code == 200, response.text
        return response.json()["doc"]
