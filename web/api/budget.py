"""The budget: balances, the ledger, and ops (DESIGN.md sections 4 and 5).

Input that fails validation is refused here (422) and never reaches the ledger, so it
stores nothing under its key; every outcome the ledger decides is stored and replayed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from blackboard.persistence.clock import to_iso
from blackboard.sync.authority.idempotency import Reply
from blackboard.sync.authority.ledger import CLIENT_OPS, MAX_TTL_S, BudgetOp, LedgerUnavailable
from blackboard.web.api.requests import (
    amount_field,
    idempotency_key_field,
    number_cursor,
    number_field,
    page_params,
    page_response,
    project_id_param,
    read_json,
    services,
    text_field,
)
from blackboard.web.auth import require_role
from blackboard.web.errors import ApiError
from blackboard.web.json_response import JSONResponse

MAX_REF_LENGTH = 256
REPLAYED_HEADER = "Idempotent-Replayed"


def reply_response(reply: Reply[Any]) -> JSONResponse:
    """An authoritative op's reply; a replay says so in a header, the body is the same."""
    headers = {REPLAYED_HEADER: "true"} if reply.replayed else None
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


def parse_op(body: dict[str, Any]) -> BudgetOp:
    op = text_field(body, "op")
    if op not in CLIENT_OPS:
        raise ApiError(422, "invalid", f"op must be one of {', '.join(CLIENT_OPS)}")
    key = idempotency_key_field(body)
    on_reservation = op in ("commit", "release")
    reservation_id = body.get("reservation_id")
    if on_reservation and not (isinstance(reservation_id, str) and reservation_id):
        raise ApiError(422, "invalid", f"{op} needs a reservation_id")
    if not on_reservation and reservation_id is not None:
        raise ApiError(422, "invalid", f"reservation_id does not apply to {op}")
    if on_reservation:
        reservation_id = text_field(body, "reservation_id")  # length and NUL checks
    amount: int | None = None
    if op == "release":
        if body.get("amount") is not None:
            raise ApiError(422, "invalid", "release frees what is left: it takes no amount")
    elif op != "commit" or body.get("amount") is not None:  # commit defaults to all of it
        amount = amount_field(body, "amount")
        if amount == 0 and op != "commit":
            raise ApiError(422, "invalid_amount", f"the amount of a {op} must be above 0")
    ref = None if body.get("ref") is None else text_field(body, "ref")
    if ref is not None and len(ref) > MAX_REF_LENGTH:
        raise ApiError(422, "invalid", f"ref may have {MAX_REF_LENGTH} characters")
    ttl_s = None
    if body.get("ttl_s") is not None:
        if op != "reserve":
            raise ApiError(422, "invalid", "ttl_s applies to reserve only")
        ttl_s = number_field(body, "ttl_s")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ApiError(422, "invalid", f"ttl_s must be above 0 and at most {MAX_TTL_S:.0f}")
    return BudgetOp(op, amount, key, reservation_id, ref, ttl_s)


async def submit_op(request: Request) -> JSONResponse:
    project_id = project_id_param(request)
    op = parse_op(await read_json(request, exact_numbers=True))
    if op.op == "topup":  # adding money is an admin's call; the other ops need write
        require_role(request, "admin")
    svc = services(request)
    try:
        reply = await svc.ledger.submit(project_id, op, request.state.actor)
    except LedgerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    if reply.effect is not None:
        svc.mirror.budget(project_id, reply.effect)
    return reply_response(reply)


async def read_balances(request: Request) -> JSONResponse:
    project_id = project_id_param(request)
    balances = await services(request).ledger.balances(project_id)
    if balances is None:
        raise ApiError(404, "not_found", f"project {project_id!r} has no budget")
    return JSONResponse(
        {
            **balances.to_json(),
            "version": balances.version,
            "updated_at": to_iso(balances.updated_at),
        }
    )


async def read_ledger(request: Request) -> JSONResponse:
    project_id = project_id_param(request)
    limit, cursor = page_params(request)
    ledger = services(request).ledger
    entries = await ledger.entries(project_id, number_cursor(cursor), limit + 1)
    if not entries and await ledger.balances(project_id) is None:
        raise ApiError(404, "not_found", f"project {project_id!r} has no budget")
    return page_response(entries, limit, lambda e: e.to_json(), lambda e: str(e.op_id))


routes = [
    Route("/api/projects/{project_id}/budget", read_balances, methods=["GET"]),
    Route("/api/projects/{project_id}/budget/ledger", read_ledger, methods=["GET"]),
    Route("/api/projects/{project_id}/budget/ops", submit_op, methods=["POST"]),
]
