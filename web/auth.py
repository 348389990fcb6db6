"""Who is calling and what they may do, checked at the door.

With BLACKBOARD_AUTH_SECRET set, every request except `GET /healthz` and the dashboard's
page shells and assets (`/ui/...`, no data in them) and every socket
carries a token (`web/tokens.py`) as `Authorization: Bearer <token>` or `?token=<token>`.
`AuthMiddleware` checks it before the app sees the request, so a refused caller is sent
no document byte and nothing of the request body or socket is read:

- HTTP: 401 for a missing, malformed, badly signed or expired token; 403 for a token of
  another project, or a role below what the route needs (reads need `read`, other methods
  `write`, creating a project `admin`, listing projects a token for every project).
- Sockets: accepted, then closed 4401 (token) or 4403 (another project, or a browser
  `Origin` outside BLACKBOARD_ALLOWED_ORIGINS), or 4429 past the actor's connection cap.
  A read token may sync; its writes are refused by the room (`sync/room/room.py`).

Handlers that need more (an admin-only operation) call `require_role`. Without the secret
the server is open: every caller is an admin named `anonymous`, and `announce()` says so
with a warning at start.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from blackboard.sync.wire import close_codes
from blackboard.web.errors import ApiError, error_response
from blackboard.web.settings import Settings
from blackboard.web.tokens import ALL_PROJECTS, MAX_TOKEN_CHARS, ROLES, Keyring, TokenError, verify

log = logging.getLogger(__name__)

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/healthz", "/ui"})
# The dashboard's page shells and assets hold no project data (the page reads it through
# the API and the socket with its own token), so a browser can load them to ask for one.
PUBLIC_PREFIXES = ("/ui/",)
_PROJECT_PATH = re.compile(r"^/(?:api/projects|sync)/([^/]+)")
_CLOSE_CODES = {
    401: close_codes.UNAUTHORIZED,
    403: close_codes.FORBIDDEN,
    429: close_codes.RATE_LIMITED,
}


@dataclass(frozen=True)
class Identity:
    actor: str
    role: str  # read | write | admin
    project: str  # a project id, or "*"
    expires_at: float | None = None  # unix seconds; None: never (open mode)

    @property
    def can_write(self) -> bool:
        return self.allows("write")

    def allows(self, role: str, project_id: str | None = None) -> bool:
        """May act as `role` (or above) on `project_id` (None: no particular project)."""
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            return False
        return project_id is None or self.project in (ALL_PROJECTS, project_id)


OPEN_IDENTITY = Identity(actor="anonymous", role="admin", project=ALL_PROJECTS)


def required_access(scope: Scope) -> tuple[str | None, str]:
    """What a request needs: (the project it touches, or "*" for all; the least role)."""
    path: str = scope["path"]
    match = _PROJECT_PATH.match(path)
    project = match.group(1) if match else None
    if scope["type"] == "websocket":
        return project, "read"
    method = scope["method"]
    if path.rstrip("/") == "/api/projects":
        # Listing shows every project; a creator's scope is checked against the body.
        return (ALL_PROJECTS, "read") if method in READ_METHODS else (None, "admin")
    return project, "read" if method in READ_METHODS else "write"


def require_role(request: Request, role: str, project_id: str | None = None) -> Identity:
    """The caller, if it may act as `role` on `project_id` (default: the path's project);
    otherwise ApiError 403."""
    identity: Identity = request.state.identity
    project_id = project_id if project_id is not None else request.path_params.get("project_id")
    if not identity.allows(role, project_id):
        where = f" on project {project_id!r}" if project_id else ""
        raise ApiError(403, "forbidden", f"this needs a {role} token{where}")
    return identity


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _token_of(scope: Scope) -> str:
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            raise ApiError(401, "unauthorized", "Authorization must be: Bearer <token>")
        raw = credentials.strip()
    else:
        raw = QueryParams(scope["query_string"]).get("token", "").encode()
    if not raw:
        raise ApiError(401, "unauthorized", "a token is required")
    if len(raw) > MAX_TOKEN_CHARS:
        raise ApiError(401, "unauthorized", "malformed token")
    return raw.decode("latin-1")


@dataclass(frozen=True)
class AuthPolicy:
    keyring: Keyring | None  # None: open mode
    allowed_origins: frozenset[str]  # empty: any Origin
    max_connections_per_actor: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthPolicy:
        keyring = None
        if settings.auth_secret:
            try:
                keyring = Keyring.parse(settings.auth_secret)
            except ValueError as exc:
                raise SystemExit(f"BLACKBOARD_AUTH_SECRET: {exc}") from None
        return cls(
            keyring,
            frozenset(settings.allowed_origins),
            settings.limits.max_connections_per_actor,
        )

    def announce(self) -> None:
        if self.keyring is None:
            log.warning(
                "OPEN MODE: BLACKBOARD_AUTH_SECRET is not set, so anyone who can reach this "
                "server may read and write every project. Set it before exposing the server."
            )
        else:
            log.info(
                "auth on: tokens signed with key %r, verified with %s",
                self.keyring.signing_kid,
                ", ".join(repr(kid) for kid in self.keyring.keys),
            )

    def admit(self, scope: Scope) -> Identity:
        """The caller's identity, if the request may go on; ApiError otherwise."""
        if self.keyring is None:
            return OPEN_IDENTITY
        try:
            claims = verify(self.keyring, _token_of(scope))
        except TokenError as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        identity = Identity(claims.actor, claims.role, claims.project, claims.expires_at)
        project, role = required_access(scope)
        if project is not None and not identity.allows("read", project):
            raise ApiError(403, "forbidden", f"the token is for project {identity.project!r}")
        if not identity.allows(role):
            raise ApiError(403, "forbidden", f"this needs a {role} token")
        return identity

    def check_origin(self, scope: Scope) -> None:
        """Browsers send Origin on sockets; other clients do not and are not checked."""
        origin = _header(scope, b"origin")
        if self.allowed_origins and origin is not None:
            if origin.decode("latin-1").rstrip("/") not in self.allowed_origins:
                raise ApiError(403, "forbidden", "origin not allowed")


class AuthMiddleware:
    """Puts the caller's identity on `scope["state"]` (`identity`, `actor`), or refuses."""

    def __init__(self, app: ASGIApp, policy: AuthPolicy) -> None:
        self.app = app
        self.policy = policy
        self._sockets_per_actor: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            identity = self.policy.admit(scope)
        except ApiError as refusal:
            log.info("refused %s %s: %s", scope["method"], scope["path"], refusal.detail)
            response = error_response(refusal.status, refusal.code, refusal.detail)
            if refusal.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="blackboard"'
            await response(scope, receive, send)
            return
        _set_identity(scope, identity)
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.policy.check_origin(scope)
            identity = self.policy.admit(scope)
            counted = self._count_socket(identity)
        except ApiError as refusal:
            log.info("refused socket %s: %s", scope["path"], refusal.detail)
            websocket = WebSocket(scope, receive, send)
            await websocket.accept()
            await websocket.close(_CLOSE_CODES[refusal.status], refusal.detail[:120])
            services = getattr(scope["app"].state, "services", None)
            if services is not None:  # counted in /metrics with the room's refusals
                services.metrics.observe_close(_CLOSE_CODES[refusal.status])
            return
        _set_identity(scope, identity)
        try:
            await self.app(scope, receive, send)
        finally:
            if counted:
                self._sockets_per_actor[identity.actor] -= 1
                if self._sockets_per_actor[identity.actor] <= 0:
                    del self._sockets_per_actor[identity.actor]

    def _count_socket(self, identity: Identity) -> bool:
        """Hold one of the actor's sockets (tokens only: open mode has one anonymous
        actor); ApiError 429 past the cap."""
        if self.policy.keyring is None:
            return False
        if self._sockets_per_actor[identity.actor] >= self.policy.max_connections_per_actor:
            raise ApiError(
                429,
                "too_many_connections",
                f"actor has {self.policy.max_connections_per_actor} sockets open already",
            )
        self._sockets_per_actor[identity.actor] += 1
        return True


def _set_identity(scope: Scope, identity: Identity) -> None:
    state = scope.setdefault("state", {})
    state["identity"] = identity
    state["actor"] = identity.actor
