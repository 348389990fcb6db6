"""`GET /api/projects/{id}/corrections`: the repairs the server made (sync.rules.repair), oldest
first, paged like every list: `{items: [...], next_cursor}`."""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.routing import Route

from blackboard.persistence.corrections import CorrectionRecord
from blackboard.web.api.requests import page_params, page_response, project_record, services
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse

_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,9})")  # seq.n of the previous page's last item
FLUSH_WAIT_S = 2.0


def _position(cursor: str) -> tuple[int, int] | None:
    if not cursor:
        return None
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise ApiError(422, "invalid", "cursor must be a next_cursor this endpoint returned")
    return int(match[1]), int(match[2])


def _item(record: CorrectionRecord) -> dict[str, object]:
    return {
        "seq": record.seq,
        "actor": record.actor,
        "path": record.path,
        "rule": record.rule,
        "before": record.before,
        "after": record.after,
        "created_at": record.created_at.isoformat(),
    }


async def list_corrections(request: Request) -> JSONResponse:
    record = await project_record(request)
    limit, cursor = page_params(request)
    recorder = services(request).corrections
    try:  # repairs of updates already committed are listed too
        await asyncio.wait_for(recorder.flush(), FLUSH_WAIT_S)
    except TimeoutError:
        pass
    found = await recorder.store.page(record.project_id, _position(cursor), limit + 1)
    return page_response(found, limit, _item, lambda last: f"{last.seq}.{last.n}")


routes = [Route("/api/projects/{project_id}/corrections", list_corrections, methods=["GET"])]
