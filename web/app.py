"""The Starlette application, composed explicitly: routes, middleware, lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from blackboard.web import health, metrics, socket_endpoint, ui_routes
from blackboard.web.api import (
    artifacts,
    budget,
    corrections,
    documents,
    exports,
    history,
    leases,
    presence,
    projects,
)
from blackboard.web.auth import AuthMiddleware, AuthPolicy
from blackboard.web.errors import (
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_internal_error,
)
from blackboard.web.services import Services
from blackboard.web.settings import Settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    auth = AuthPolicy.from_settings(settings)  # a malformed secret stops here

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        auth.announce()
        services = Services.build(settings)
        await services.start()
        app.state.services = services
        try:
            yield
        finally:
            await services.stop()

    return Starlette(
        routes=[
            *health.routes,
            *metrics.routes,
            *projects.routes,
            *documents.routes,
            *history.routes,
            *corrections.routes,
            *budget.routes,
            *leases.routes,
            *presence.routes,
            *artifacts.routes,
            *exports.routes,
            *socket_endpoint.routes,
            *ui_routes.routes,
        ],
        middleware=[Middleware(AuthMiddleware, policy=auth)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_internal_error,
        },
        lifespan=lifespan,
    )
