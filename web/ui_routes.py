"""The dashboard (DESIGN.md section 11): two page shells and their bundled assets.

The pages are static: they hold no document byte, and read everything through the API
and the socket with the caller's token (so the shells and assets need none, see
`web/auth.py`). The assets are built from `web/ui/` by `make ui` into `web/static/`,
which the wheel ships; a checkout that was never built answers 503 saying so.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from blackboard.schemas.document import is_valid_id
from blackboard.web.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/ui/assets"
# The shells change with every build: browsers revalidate them (ETag) instead of guessing.
_NO_CACHE = {"Cache-Control": "no-cache"}


def _page(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise ApiError(503, "ui_not_built", "the dashboard is not built: run `make ui`")
    return FileResponse(path, media_type="text/html", headers=_NO_CACHE)


async def project_list(_: Request) -> Response:
    return _page("index.html")


async def project_page(request: Request) -> Response:
    if not is_valid_id(request.path_params["project_id"]):
        raise ApiError(404, "not_found", "no such project")
    return _page("project.html")


class _Assets(StaticFiles):
    """The built assets; before `make ui` each is a plain 404, not a server error."""

    async def check_config(self) -> None:
        if STATIC_DIR.is_dir():
            await super().check_config()


async def to_list(request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/ui/{query}")


routes = [
    Route("/ui", to_list),
    Route("/ui/", project_list),
    Route("/ui/projects/{project_id}", project_page),
    Mount(ASSETS_PATH, _Assets(directory=STATIC_DIR, check_dir=False), name="ui_assets"),
]
