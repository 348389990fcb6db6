"""Reading request input with clear 4xx errors (shared by every endpoint)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from starlette.requests import Request

from blackboard.persistence.errors import ProjectNotFound
from blackboard.persistence.records import ProjectRecord
from blackboard.persistence.replay import CorruptDocument
from blackboard.schemas.document import is_valid_id
from blackboard.schemas.money import BadAmount, parse_amount
from blackboard.sync.authority.idempotency import MAX_KEY_LENGTH
from blackboard.sync.room.room import Room
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse
from blackboard.web.services import Services

T = TypeVar("T")

MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32  # nesting of a JSON body (a project's spec is the deepest part)
MAX_TEXT_LENGTH = 256  # characters of a free-text field unless a field says otherwise
MAX_SAFE_INTEGER = 2**53 - 1  # JSON numbers follow JS rules (DESIGN.md section 1)
MAX_INT64 = 2**63 - 1  # what a database integer column holds
_DIGITS = re.compile(r"[0-9]+", re.ASCII)  # not str.isdigit: "²" is a digit there
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # a lone one (JSON "\ud800") is no text


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
        value = json.loads(
            body, parse_float=Decimal if exact_numbers else None, parse_constant=_no_constant
        )
    except RecursionError:
        raise ApiError(422, "invalid", f"body nests deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid", "body must be a JSON object")
    _check_json(value)
    return value


def _no_constant(name: str) -> Any:
    raise ApiError(422, "invalid", f"numbers must be finite, got {name}")


def _check_json(body: dict[str, Any]) -> None:
    """What every JSON body must be, whatever its fields: bounded nesting, text that is
    Unicode (a lone surrogate breaks the CRDT and the database), finite numbers and
    integers JS can hold (a double past 1e308 parses as Infinity)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ApiError(422, "invalid", f"body nests deeper than {MAX_JSON_DEPTH}")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise ApiError(422, "invalid", "body holds a lone surrogate in a key")
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            if _SURROGATE.search(value):
                raise ApiError(422, "invalid", "body holds a lone surrogate in a string")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_SAFE_INTEGER:
                raise ApiError(422, "invalid", f"integers must be within ±{MAX_SAFE_INTEGER}")
        elif isinstance(value, float | Decimal) and not math.isfinite(value):
            raise ApiError(422, "invalid", "numbers must be finite")


def text_field(
    body: dict[str, Any],
    name: str,
    *,
    default: str | None = None,
    max_length: int = MAX_TEXT_LENGTH,
) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise ApiError(422, "invalid", f"{name} must be a non-empty string")
    if len(value) > max_length:
        raise ApiError(422, "invalid", f"{name} may have {max_length} characters")
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
    return text_field(body, "idempotency_key", max_length=MAX_KEY_LENGTH)


def count_param(raw: str, name: str, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    """An integer from a query parameter: ASCII digits, from `minimum` to `maximum`."""
    # The length check first: int() of a huge string is slow (and capped at 4,300 digits).
    fits = _DIGITS.fullmatch(raw) and len(raw) <= len(str(maximum))
    value = int(raw) if fits else None
    if value is None or not minimum <= value <= maximum:
        raise ApiError(422, "invalid", f"{name} must be an integer from {minimum} to {maximum}")
    return value


def project_id_param(request: Request) -> str:
    project_id = request.path_params["project_id"]
    if not is_valid_id(project_id):
        raise ApiError(404, "not_found", f"project {project_id!r} does not exist")
    return project_id


def page_params(request: Request, *, default: int = 100, maximum: int = 1000) -> tuple[int, str]:
    limit = count_param(request.query_params.get("limit", str(default)), "limit", 1, maximum)
    return limit, request.query_params.get("cursor", "")


def number_cursor(cursor: str) -> int:
    """A cursor that is the number of the last item of the previous page (0: from the start)."""
    return count_param(cursor, "cursor") if cursor else 0


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
