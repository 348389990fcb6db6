"""Who is calling. Without BLACKBOARD_AUTH_SECRET the server is open (development): every
caller is an admin named `anonymous`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class Identity:
    actor: str
    role: str  # read | write | admin
    project: str  # a project id, or "*"

    @property
    def can_write(self) -> bool:
        return self.role in ("write", "admin")


OPEN_IDENTITY = Identity(actor="anonymous", role="admin", project="*")


class IdentityMiddleware:
    """Puts the caller's identity on `request.state` (`identity`, `actor`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            state = scope.setdefault("state", {})
            state["identity"] = OPEN_IDENTITY
            state["actor"] = OPEN_IDENTITY.actor
        await self.app(scope, receive, send)
