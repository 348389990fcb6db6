"""Task leases: claim, renew, release (DESIGN.md sections 4 and 5)."""

from __future__ import annotations

from typing import Any

from pycrdt import Map
from starlette.requests import Request
from starlette.routing import Route

from blackboard.persistence.errors import StoreError
from blackboard.schemas.document import is_valid_id
from blackboard.sync.authority.leases import ACTIONS, DEFAULT_TTL_S, MAX_TTL_S, LeaseRequest
from blackboard.web.api.budget import reply_response
from blackboard.web.api.requests import (
    idempotency_key_field,
    number_field,
    read_json,
    room_of,
    services,
    text_field,
)
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse


def parse_lease(body: dict[str, Any]) -> LeaseRequest:
    action = text_field(body, "action")
    if action not in ACTIONS:
        raise ApiError(422, "invalid", f"action must be one of {', '.join(ACTIONS)}")
    holder = text_field(body, "holder")
    key = idempotency_key_field(body)
    ttl_s = DEFAULT_TTL_S
    if body.get("ttl_s") is not None:
        ttl_s = number_field(body, "ttl_s")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ApiError(422, "invalid", f"ttl_s must be above 0 and at most {MAX_TTL_S:.0f}")
    token = body.get("fencing_token")
    if action == "claim":
        token = None  # a claim is granted a new token; it presents none
    elif isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise ApiError(422, "invalid", f"{action} needs the fencing_token of the lease")
    return LeaseRequest(action, holder, key, ttl_s, token)


async def lease_task(request: Request) -> JSONResponse:
    room = await room_of(request)  # 404 for an unknown project
    task_id = request.path_params["task_id"]
    lease = parse_lease(await read_json(request))
    if not is_valid_id(task_id) or task_id not in room.doc.get("tasks", type=Map):
        raise ApiError(404, "not_found", f"task {task_id!r} is not in the tasks of the project")
    svc = services(request)
    try:
        reply = await svc.leases.apply(room.project_id, task_id, lease)
    except StoreError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    if reply.effect is not None:
        svc.mirror.lease(reply.effect)
    return reply_response(reply)


routes = [
    Route("/api/projects/{project_id}/tasks/{task_id}/lease", lease_task, methods=["POST"]),
]
