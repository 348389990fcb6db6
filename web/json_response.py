"""The JSON response of every endpoint: strict JSON, and never a 500 for a value a
document (or a presence state) can hold (`schemas.views.finite_json`)."""

from __future__ import annotations

import json
from typing import Any

from starlette import responses

from schemas.views import finite_json


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        try:  # the usual case: one strict pass
            return _dumps(content, ascii_only=False)
        except (ValueError, TypeError):
            # NaN/Infinity or binary content somewhere; ASCII escapes a lone surrogate.
            return _dumps(finite_json(content), ascii_only=True)


def _dumps(content: Any, *, ascii_only: bool) -> bytes:
    text = json.dumps(content, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")
