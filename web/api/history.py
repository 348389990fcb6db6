"""A project's history: its log entries, and its state as of a seq or a time.

Both read storage only (a project is never loaded for them). History older than
BLACKBOARD_HISTORY_RETENTION_S may have been compacted away; asking for it answers
410 `history_pruned`, never an older or partial state.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.routing import Route

from blackboard.persistence.errors import HistoryPruned
from blackboard.persistence.history import seq_at_time
from blackboard.persistence.replay import CorruptDocument, replay
from blackboard.persistence.store import Store
from blackboard.schemas.views import doc_to_json
from blackboard.web.api.requests import (
    count_param,
    number_cursor,
    page_params,
    page_response,
    project_record,
    services,
)
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse


async def read_history(request: Request) -> JSONResponse:
    """`{items: [{seq, actor, created_at, size}], next_cursor}`, oldest first."""
    record = await project_record(request)
    limit, cursor = page_params(request)
    entries = await services(request).store.history(
        record.project_id, number_cursor(cursor), limit + 1
    )
    return page_response(
        entries,
        limit,
        lambda entry: {
            "seq": entry.seq,
            "actor": entry.actor,
            "created_at": entry.created_at.isoformat(),
            "size": entry.size,
        },
        lambda entry: str(entry.seq),
    )


def _at_seq(raw: str, last: int) -> int:
    seq = count_param(raw, "at_seq")
    if seq > last:
        raise ApiError(422, "invalid", f"at_seq {seq} is past the last committed seq {last}")
    return seq


def parse_at_time(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        # Naive means UTC. In UTC year 1 at +14:00 falls before datetime.min.
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid", "at_time must be an ISO 8601 time") from None


async def history_pruned(store: Store, project_id: str) -> ApiError:
    """The 410 for a state older than the retained history, naming the oldest kept."""
    oldest = await store.oldest_retained_seq(project_id)
    detail = f"that state is older than the retained history (oldest kept: seq {oldest})"
    return ApiError(410, "history_pruned", detail)


async def read_state(request: Request) -> JSONResponse:
    """`{project_id, seq, doc}`: every root as of `?at_seq=N` or `?at_time=ISO`."""
    record = await project_record(request)
    params = request.query_params
    if ("at_seq" in params) == ("at_time" in params):
        raise ApiError(422, "invalid", "give exactly one of at_seq and at_time")
    store = services(request).store
    try:
        if "at_seq" in params:
            seq = _at_seq(params["at_seq"], record.seq)
        else:
            seq = await seq_at_time(store, record.project_id, parse_at_time(params["at_time"]))
        stored = await store.load_at(record.project_id, seq)
        # In a thread, as an export does: a big document replayed and read on the loop
        # would hold every room meanwhile.
        doc = await asyncio.to_thread(lambda: doc_to_json(replay(stored)))
    except HistoryPruned:
        raise await history_pruned(store, record.project_id) from None
    except CorruptDocument as exc:
        raise ApiError(500, "load_failed", str(exc)) from None
    return JSONResponse({"project_id": record.project_id, "seq": seq, "doc": doc})


routes = [
    Route("/api/projects/{project_id}/history", read_history, methods=["GET"]),
    Route("/api/projects/{project_id}/state", read_state, methods=["GET"]),
]
