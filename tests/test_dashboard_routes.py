"""The dashboard's routes without a browser: shells, redirect, and a checkout whose
assets were never built (`make ui`)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from blackboard.web import ui_routes
from blackboard.web.errors import ApiError, handle_api_error


def client(app: Starlette | None = None) -> httpx.AsyncClient:
    app = app or Starlette(routes=ui_routes.routes, exception_handlers={ApiError: handle_api_error})
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_unbuilt_dashboard_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setattr(ui_routes, "STATIC_DIR", missing)
    assets = ui_routes._Assets(directory=missing, check_dir=False)
    app = Starlette(
        routes=[*ui_routes.routes[:-1], Mount(ui_routes.ASSETS_PATH, assets)],
        exception_handlers={ApiError: handle_api_error},
    )
    async with client(app) as http:
        for path in ("/ui/", "/ui/projects/film"):
            response = await http.get(path)
            assert response.status_code == 503
            assert response.json() == {
                "error": "ui_not_built",
                "detail": "the dashboard is not built: run `make ui`",
            }
        assert (await http.get("/ui/assets/project.js")).status_code == 404


async def test_shells_redirect_and_bad_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "index.html").write_text("<p>list</p>")
    (tmp_path / "project.html").write_text("<p>project</p>")
    monkeypatch.setattr(ui_routes, "STATIC_DIR", tmp_path)
    async with client() as http:
        listing = await http.get("/ui/")
        assert listing.status_code == 200 and listing.text == "<p>list</p>"
        assert listing.headers["content-type"].startswith("text/html")
        assert listing.headers["cache-control"] == "no-cache"
        page = await http.get("/ui/projects/film-1")
        assert page.status_code == 200 and page.text == "<p>project</p>"
        assert (await http.get("/ui/projects/no%20such")).status_code == 404
        moved = await http.get("/ui?token=abc")
        assert moved.status_code == 307 and moved.headers["location"] == "/ui/?token=abc"
