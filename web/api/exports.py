"""Exports over HTTP (DESIGN.md section 9): POST builds an archive (streamed to a
temporary file, then into the object store under `exports/{project}/{export_id}.zip`);
GET lists them and streams one back."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from blackboard.persistence.clock import to_iso, utc_now
from blackboard.persistence.errors import HistoryPruned
from blackboard.persistence.objects.object_store import ObjectInfo, ObjectStoreError, file_chunks
from blackboard.schemas.document import is_valid_id
from blackboard.sync.projects.export_archive import ExportError, write_export
from blackboard.web.api.history import history_pruned, parse_at_time
from blackboard.web.api.requests import project_record, read_json, services
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse

PREFIX = "exports/"
SUFFIX = ".zip"
MAX_LISTED = 1000


def _key(project_id: str, export_id: str) -> str:
    return f"{PREFIX}{project_id}/{export_id}{SUFFIX}"


def _listed(info: ObjectInfo) -> dict[str, Any]:
    export_id = info.key.rsplit("/", 1)[1].removesuffix(SUFFIX)
    return {
        "export_id": export_id,
        "key": info.key,
        "size": info.size,
        "created_at": to_iso(info.modified),
    }


def _scratch_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


async def create_export(request: Request) -> JSONResponse:
    record = await project_record(request)
    body = await read_json(request)
    at_seq, at_time = body.get("at_seq"), body.get("at_time")
    if at_seq is not None and at_time is not None:
        raise ApiError(422, "invalid", "give at most one of at_seq and at_time")
    valid_seq = isinstance(at_seq, int) and not isinstance(at_seq, bool) and at_seq >= 0
    if at_seq is not None and not valid_seq:
        raise ApiError(422, "invalid", "at_seq must be a non-negative integer")
    if at_time is not None and not isinstance(at_time, str):
        raise ApiError(422, "invalid", "at_time must be an ISO 8601 time")
    with_artifacts = body.get("with_artifacts", False)
    if not isinstance(with_artifacts, bool):
        raise ApiError(422, "invalid", "with_artifacts must be true or false")
    svc = services(request)
    created = utc_now()
    export_id = f"{created:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"
    key = _key(record.project_id, export_id)
    # The scratch folder is made and removed in a thread: removing a large archive
    # (artifacts included) is file-system work the event loop must not wait on.
    tmp = await asyncio.to_thread(_scratch_dir, svc.settings.data_dir / "tmp")
    try:
        out = tmp / f"{export_id}{SUFFIX}"
        result = await write_export(
            svc.store,
            svc.ledger,
            svc.objects,
            record.project_id,
            out,
            at_seq=at_seq,
            at_time=parse_at_time(at_time) if at_time is not None else None,
            with_artifacts=with_artifacts,
        )
        await svc.objects.put(key, file_chunks(out))
    except HistoryPruned:
        raise await history_pruned(svc.store, record.project_id) from None
    except ExportError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except ObjectStoreError as exc:
        raise ApiError(503, "object_store_unavailable", str(exc)) from None
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
    reply = {
        "export_id": export_id,
        "key": key,
        "seq": result.seq,
        "size": result.size,
        "sha256": result.sha256,
        "created_at": to_iso(created),
    }
    return JSONResponse(reply, status_code=201)


async def list_exports(request: Request) -> JSONResponse:
    record = await project_record(request)
    items = []
    try:
        async for info in services(request).objects.list(f"{PREFIX}{record.project_id}/"):
            if info.key.endswith(SUFFIX):
                items.append(_listed(info))
    except ObjectStoreError as exc:
        raise ApiError(503, "object_store_unavailable", str(exc)) from None
    # Ids start with their creation time: newest last, capped to the newest MAX_LISTED.
    return JSONResponse({"items": items[-MAX_LISTED:], "next_cursor": None})


async def read_export(request: Request) -> Response:
    record = await project_record(request)
    export_id = request.path_params["export_id"]
    if not is_valid_id(export_id):
        raise ApiError(404, "not_found", f"export {export_id!r} does not exist")
    key = _key(record.project_id, export_id)
    objects = services(request).objects
    try:
        info = await objects.stat(key)
    except ObjectStoreError as exc:
        raise ApiError(503, "object_store_unavailable", str(exc)) from None
    if info is None:
        raise ApiError(404, "not_found", f"export {export_id!r} does not exist")
    return StreamingResponse(
        objects.get(key),
        media_type="application/zip",
        headers={
            "Content-Length": str(info.size),
            "Content-Disposition": f'attachment; filename="{record.project_id}-{export_id}.zip"',
        },
    )


routes = [
    Route("/api/projects/{project_id}/exports", create_export, methods=["POST"]),
    Route("/api/projects/{project_id}/exports", list_exports, methods=["GET"]),
    Route("/api/projects/{project_id}/exports/{export_id}", read_export, methods=["GET"]),
]
