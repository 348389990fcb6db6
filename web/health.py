"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.routing import Route

from blackboard.web.api.requests import services
from blackboard.web.json_response import JSONResponse

PING_TIMEOUT_S = 2.0


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.store.ping(), PING_TIMEOUT_S)
        checks[svc.store.backend] = "ok"
    except Exception as exc:
        checks[svc.store.backend] = f"down: {exc}"
    try:
        await asyncio.wait_for(svc.objects.ping(), PING_TIMEOUT_S)
        checks[f"objects_{svc.objects.name}"] = "ok"
    except Exception as exc:
        checks[f"objects_{svc.objects.name}"] = f"down: {exc}"
    checks["update_log"] = "ok" if svc.update_log.healthy else "retrying"
    ready = all(v == "ok" for v in checks.values())
    status = "ready" if ready else "unavailable"
    if svc.cross_instance is not None:
        # Redis down only slows delivery between instances (they poll the log); each
        # instance still serves its clients, so it is reported but keeps it ready.
        checks["redis"] = svc.cross_instance.state
        if ready and checks["redis"] != "ok":
            status = "degraded"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
