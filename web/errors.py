"""JSON errors: `{"error": code, "detail": text}` with a fitting status."""

from __future__ import annotations

import logging

from starlette.requests import Request

from blackboard.persistence.errors import error_body
from blackboard.web.json_response import JSONResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request refused with `status` (raised by handlers, the auth middleware too)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status)


async def handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail)


async def handle_http_exception(_: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return error_response(status, code, str(detail))


async def handle_internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error")
