"""Artifacts over HTTP (DESIGN.md section 9): PUT streams a body to the object store and
indexes it; GET and HEAD stream it back, whole or one byte range."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from blackboard.persistence.errors import ProjectNotFound
from blackboard.persistence.objects.artifact_keys import object_key, stored_sha256
from blackboard.persistence.objects.object_store import ObjectStoreError, ObjectTooLarge
from blackboard.persistence.replay import CorruptDocument
from blackboard.schemas.document import is_valid_id
from blackboard.sync.projects.artifacts import ArtifactExists, NotIndexed
from blackboard.web.api.requests import project_id_param, services
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse

TEXT_METADATA = ("shot_id", "model", "model_version", "prompt")
NUMBER_METADATA = ("seed", "cost")
MAX_METADATA_CHARS = 16 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _ids(request: Request) -> tuple[str, str]:
    artifact_id = request.path_params["artifact_id"]
    if not is_valid_id(artifact_id):
        raise ApiError(422, "invalid", "artifact_id must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    return project_id_param(request), artifact_id


def _metadata(request: Request) -> dict[str, Any]:
    params = request.query_params
    found: dict[str, Any] = {}
    for name in TEXT_METADATA:
        if name in params:
            value = params[name]
            if len(value) > MAX_METADATA_CHARS or "\x00" in value:
                raise ApiError(422, "invalid", f"{name} must be text of at most 16 KiB")
            found[name] = value
    for name in NUMBER_METADATA:
        if name in params:
            try:
                number = float(params[name])
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ApiError(422, "invalid", f"{name} must be a finite number")
            found[name] = number
    return found


def _store_error(exc: ObjectStoreError) -> ApiError:
    return ApiError(503, "object_store_unavailable", str(exc))


async def put_artifact(request: Request) -> JSONResponse:
    project_id, artifact_id = _ids(request)
    svc = services(request)
    limit = svc.artifacts.max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the artifact exceeds {limit} bytes")
    metadata = _metadata(request)
    content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
    try:
        upload = await svc.artifacts.upload(
            project_id, artifact_id, request.stream(), content_type, metadata
        )
    except ProjectNotFound:
        raise ApiError(404, "not_found", f"project {project_id!r} does not exist") from None
    except ClientDisconnect:  # nothing was kept; nobody is left to read the answer
        raise ApiError(400, "incomplete_body", "the client left before the body ended") from None
    except ObjectTooLarge:
        raise ApiError(413, "too_large", f"the artifact exceeds {limit} bytes") from None
    except ArtifactExists as exc:
        raise ApiError(409, "artifact_exists", str(exc)) from None
    except NotIndexed as exc:
        raise ApiError(503, "not_durable", str(exc)) from None
    except ObjectStoreError as exc:
        raise _store_error(exc) from None
    return JSONResponse(upload.entry, status_code=upload.status)


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range of a single-range `Range` header; None: the whole body
    (no header, or several ranges, which may be answered whole). ApiError 416 if it
    cannot be satisfied."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":  # the last N bytes
            start, end = max(0, size - int(last)), size - 1
            if int(last) <= 0:
                raise ValueError
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if end < start:
                raise ValueError
    except ValueError:
        start, end = size, size - 1  # unsatisfiable
    if start >= size:
        raise ApiError(416, "range_not_satisfiable", f"the artifact has {size} bytes")
    return start, end


async def get_artifact(request: Request) -> Response:
    project_id, artifact_id = _ids(request)
    svc = services(request)
    try:
        entry = await svc.artifacts.entry(project_id, artifact_id)
    except ProjectNotFound:
        raise ApiError(404, "not_found", f"project {project_id!r} does not exist") from None
    except CorruptDocument as exc:
        raise ApiError(500, "load_failed", str(exc)) from None
    sha = stored_sha256(entry)
    if entry is None or sha is None:
        raise ApiError(404, "not_found", f"artifact {artifact_id!r} does not exist")
    key = object_key(project_id, artifact_id, sha)
    try:
        info = await svc.objects.stat(key)
    except ObjectStoreError as exc:
        raise _store_error(exc) from None
    if info is None:  # never written so by the server; a client may have forged an entry
        raise ApiError(404, "not_found", f"artifact {artifact_id!r} has no stored object")
    etag = f'"{sha}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    content_type = entry.get("content_type")
    media_type = content_type if isinstance(content_type, str) else DEFAULT_CONTENT_TYPE
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    size = info.size
    try:
        span = _range(request.headers.get("range"), size)
    except ApiError:
        return JSONResponse(
            {"error": "range_not_satisfiable", "detail": f"the artifact has {size} bytes"},
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    start, end, status = 0, size - 1, 200
    if span is not None:
        (start, end), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    if size == 0:
        return Response(b"", status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        svc.objects.get(key, start, end), status_code=status, headers=headers, media_type=media_type
    )


routes = [
    Route("/api/projects/{project_id}/artifacts/{artifact_id}", put_artifact, methods=["PUT"]),
    Route(
        "/api/projects/{project_id}/artifacts/{artifact_id}",
        get_artifact,
        methods=["GET", "HEAD"],
    ),
]
