"""`GET /metrics`: this server's Prometheus metrics (`blackboard.sync.room.metrics.ServerMetrics`).

Server-wide figures, so with auth on it takes an admin token for every project (`*`).
"""

from __future__ import annotations

from prometheus_client import generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blackboard.sync.room.metrics import CONTENT_TYPE
from blackboard.web.api.requests import services
from blackboard.web.auth import require_role
from blackboard.web.tokens import ALL_PROJECTS


async def metrics(request: Request) -> Response:
    require_role(request, "admin", ALL_PROJECTS)
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics)]
