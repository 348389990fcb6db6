"""Reading request input with clear 4xx errors (shared by every endpoint)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse

from persistence.errors import ProjectNotFound
from persistence.idempotency import MAX_KEY_LENGTH
from persistence.records import ProjectRecord
from persistence.replay import CorruptDocument
from schemas.document import is_valid_id
from schemas.money import BadAmount, parse_amount
from sync.room import Room
from web.errors import ApiError
from web.services import Services

T = TypeVar("T")

MAX_JSON_BYTES = 1024 * 1024


def services(request: Request) -> Services:
    return request.app.state.services


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) past `limit` bytes without reading more."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, *, exact_numbers: bool = False) -> dict[str, Any]:
    """The body as a JSON object; `exact_numbers` reads decimals as Decimal (money)."""
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        value = json.loads(body, parse_float=Decimal if exact_numbers else None)
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid", "body must be a JSON object")
    return value


def text_field(body: dict[str, Any], name: str, *, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise ApiError(422, "invalid", f"{name} must be a non-empty string")
    if "\x00" in value:  # Postgres cannot store it
        raise ApiError(422, "invalid", f"{name} must not contain a NUL character")
    return value


def number_field(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | Decimal)
        or not math.isfinite(value)
    ):
        raise ApiError(422, "invalid", f"{name} must be a finite number")
    return float(value)


def amount_field(body: dict[str, Any], name: str) -> int:
    """A money amount (a JSON number or a decimal string) as integer units."""
    try:
        return parse_amount(body.get(name), name)
    except BadAmount as exc:
        raise ApiError(422, "invalid_amount", str(exc)) from None


def idempotency_key_field(body: dict[str, Any]) -> str:
    key = text_field(body, "idempotency_key")
    if len(key) > MAX_KEY_LENGTH:
        raise ApiError(422, "invalid", f"idempotency_key may have {MAX_KEY_LENGTH} characters")
    return key


def project_id_param(request: Request) -> str:
    project_id = request.path_params["project_id"]
    if not is_valid_id(project_id):
        raise ApiError(404, "not_found", f"project {project_id!r} does not exist")
    return project_id


def page_params(request: Request, *, default: int = 100, maximum: int = 1000) -> tuple[int, str]:
    raw = request.query_params.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(422, "invalid", "limit must be an integer") from None
    if not 1 <= limit <= maximum:
        raise ApiError(422, "invalid", f"limit must be between 1 and {maximum}")
    return limit, request.query_params.get("cursor", "")


def number_cursor(cursor: str) -> int:
    """A cursor that is the number of the last item of the previous page (0: from the start)."""
    if not cursor:
        return 0
    if not cursor.isdigit():
        raise ApiError(422, "invalid", "cursor must be a next_cursor this endpoint returned")
    return int(cursor)


def page_response(
    found: Sequence[T], limit: int, item: Callable[[T], Any], cursor_of: Callable[[T], str]
) -> JSONResponse:
    """`{items, next_cursor}` from up to `limit + 1` rows: an extra row means a next page."""
    page = found[:limit]
    more = len(found) > limit
    return JSONResponse(
        {"items": [item(r) for r in page], "next_cursor": cursor_of(page[-1]) if more else None}
    )


async def project_record(request: Request) -> ProjectRecord:
    """The project the path names, read from storage (it is not loaded); 404 if unknown."""
    project_id = project_id_param(request)
    record = await services(request).store.get_project(project_id)
    if record is None:
        raise ApiError(404, "not_found", f"project {project_id!r} does not exist")
    return record


async def room_of(request: Request) -> Room:
    project_id = project_id_param(request)
    try:
        return await services(request).rooms.get(project_id)
    except ProjectNotFound:
        raise ApiError(404, "not_found", f"project {project_id!r} does not exist") from None
    except CorruptDocument as exc:
        raise ApiError(500, "load_failed", str(exc)) from None
