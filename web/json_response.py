"""The JSON response of every endpoint: strict JSON, and never a 500 for a value a
document (or a presence state) can hold (`blackboard.schemas.views.json_bytes`)."""

from __future__ import annotations

from typing import Any

from starlette import responses

from blackboard.schemas.views import json_bytes


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return json_bytes(content)
