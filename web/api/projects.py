"""Projects: create, list, read as JSON."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from blackboard.persistence.errors import ProjectExists
from blackboard.persistence.records import ProjectRecord
from blackboard.schemas.document import is_valid_id
from blackboard.schemas.money import is_currency
from blackboard.schemas.views import doc_to_json
from blackboard.sync.projects.creation import create_project
from blackboard.web.api.requests import (
    amount_field,
    page_params,
    page_response,
    read_json,
    room_of,
    services,
    text_field,
)
from blackboard.web.auth import require_role
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse

MAX_TITLE_LENGTH = 200


def project_summary(record: ProjectRecord) -> dict[str, Any]:
    return {
        "project_id": record.project_id,
        "title": record.title,
        "seq": record.seq,
        "created_at": record.created_at.isoformat(),
    }


async def create(request: Request) -> JSONResponse:
    body = await read_json(request)
    project_id = text_field(body, "project_id")
    if not is_valid_id(project_id):
        raise ApiError(422, "invalid", "project_id must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    require_role(request, "admin", project_id)
    title = text_field(body, "title", max_length=MAX_TITLE_LENGTH)
    budget_total = amount_field(body, "budget_total")
    currency = text_field(body, "currency", default="USD")
    if not is_currency(currency):
        raise ApiError(422, "invalid", "currency must be three uppercase letters, like USD")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise ApiError(422, "invalid", "spec must be an object")
    try:
        record = await create_project(
            services(request).store,
            project_id,
            title,
            budget_total,
            currency,
            spec,
            actor=request.state.actor,
        )
    except ProjectExists:
        raise ApiError(409, "exists", f"project {project_id!r} already exists") from None
    return JSONResponse(project_summary(record), status_code=201)


async def list_projects(request: Request) -> JSONResponse:
    limit, cursor = page_params(request)
    if cursor and not is_valid_id(cursor):  # the id of the previous page's last project
        raise ApiError(422, "invalid", "cursor must be a next_cursor this endpoint returned")
    records = await services(request).store.list_projects(limit + 1, cursor or None)
    return page_response(records, limit, project_summary, lambda r: r.project_id)


async def read(request: Request) -> JSONResponse:
    room = await room_of(request)
    record = await services(request).store.get_project(room.project_id)
    assert record is not None
    summary = project_summary(record)
    summary["seq"] = max(room.seq, record.seq)
    summary["doc"] = doc_to_json(room.doc)
    return JSONResponse(summary)


routes = [
    Route("/api/projects", create, methods=["POST"]),
    Route("/api/projects", list_projects, methods=["GET"]),
    Route("/api/projects/{project_id}", read, methods=["GET"]),
]
