"""The document as binary Yjs: read (optionally as a diff) and write (same rules as the
socket; answered once durable).

A posted update may be as large as the document limit, like a socket's handshake step 2:
it is how an agent sends an offline backlog whole. The writer's token is checked before
the body is read (`blackboard.web.auth`)."""

from __future__ import annotations

import asyncio
import base64
import binascii

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blackboard.persistence.errors import LogFull
from blackboard.sync.room.doc_size import DocumentTooLarge
from blackboard.sync.room.origin import Origin, Source
from blackboard.sync.rules.validation import MalformedUpdate
from blackboard.web.api.requests import read_body, room_of, services
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse

DURABLE_TIMEOUT_S = 30.0


def _decode_b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid", "state_vector must be base64url") from None


async def read_update(request: Request) -> Response:
    room = await room_of(request)
    raw = request.query_params.get("state_vector")
    try:
        update = room.doc.get_update(_decode_b64url(raw)) if raw else room.doc.get_update()
    except ValueError:
        raise ApiError(422, "invalid", "state_vector does not decode") from None
    return Response(update, media_type="application/octet-stream")


async def write_update(request: Request) -> JSONResponse:
    limits = services(request).settings.limits
    update = await read_body(request, max(limits.max_message_bytes, limits.max_document_bytes))
    room = await room_of(request)
    try:
        committed = room.apply_update(update, Origin(Source.CLIENT, request.state.actor))
    except MalformedUpdate as exc:
        raise ApiError(422, "malformed_update", str(exc)) from None
    except DocumentTooLarge as exc:
        raise ApiError(413, "document_too_large", str(exc)) from None
    except LogFull as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    if committed is None:
        return JSONResponse({"seq": room.seq, "changed": False})
    try:
        seq = await asyncio.wait_for(asyncio.shield(committed), DURABLE_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(503, "not_durable", "the update is applied but not yet durable") from None
    return JSONResponse({"seq": seq, "changed": True})


routes = [
    Route("/api/projects/{project_id}/update", read_update, methods=["GET"]),
    Route("/api/projects/{project_id}/update", write_update, methods=["POST"]),
]
