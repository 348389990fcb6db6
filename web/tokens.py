"""Access tokens: HMAC-SHA256-signed claims, minted and verified with a keyring.

A token is a JWT in compact form signed with HS256 (any JWT library can mint one):

    base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(key, first two parts))

    header: {"alg": "HS256", "typ": "JWT", "kid": "<key id>"}
    claims: {"project": "<id>" | "*", "role": "read" | "write" | "admin",
             "actor": "<name>", "exp": <unix seconds>, "iat": <unix seconds>}

Keys come from BLACKBOARD_AUTH_SECRET: `kid:secret` pairs separated by commas. The first
pair signs; every pair verifies, so a secret is rotated by putting a new pair first,
waiting for old tokens to expire, then dropping the old pair. A single secret without a
`kid:` prefix gets the key id `default`.

Verification is strict and bounded: the length is capped before anything is decoded, the
algorithm must be exactly HS256 (no `none`, no asymmetric algorithms, no other hashes),
the signature is compared in constant time before the claims are parsed, and `exp` is
checked without leeway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from schemas.document import is_valid_id
from sync.origin import SERVER_ACTOR

ALGORITHM = "HS256"
ROLES = ("read", "write", "admin")  # each includes what the ones before it may do
ALL_PROJECTS = "*"
DEFAULT_KID = "default"
MAX_TOKEN_CHARS = 4096
MAX_ACTOR_CHARS = 128
MIN_SECRET_CHARS = 16
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_ACTOR = re.compile(r"[^\x00-\x1f\x7f]+")


class TokenError(ValueError):
    """The token is missing, malformed, signed with an unknown key or badly signed."""


class TokenExpired(TokenError):
    """The token was valid but its `exp` has passed."""


@dataclass(frozen=True)
class Claims:
    project: str  # a project id, or "*" for every project
    role: str
    actor: str
    expires_at: int  # unix seconds
    kid: str


@dataclass(frozen=True)
class Keyring:
    signing_kid: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Read `kid:secret[,kid:secret...]`; raise ValueError with a clear message."""
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        if not entries:
            raise ValueError("no secret given")
        keys: dict[str, bytes] = {}
        for entry in entries:
            kid, sep, secret = entry.partition(":")
            if not sep:
                if len(entries) > 1:
                    raise ValueError("with several secrets, each must be written kid:secret")
                kid, secret = DEFAULT_KID, entry
            if not _KID.fullmatch(kid):
                raise ValueError(f"key id {kid!r} must match {_KID.pattern}")
            if kid in keys:
                raise ValueError(f"key id {kid!r} is listed twice")
            if len(secret) < MIN_SECRET_CHARS:
                raise ValueError(f"the secret of key {kid!r} is shorter than {MIN_SECRET_CHARS}")
            keys[kid] = secret.encode()
        return cls(signing_kid=next(iter(keys)), keys=keys)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


def _sign(key: bytes, signing_input: str) -> bytes:
    return hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()


def _check_claims(project: object, role: object, actor: object) -> tuple[str, str, str]:
    if not isinstance(project, str) or not (project == ALL_PROJECTS or is_valid_id(project)):
        raise TokenError("the token's project is not a project id or *")
    if not isinstance(role, str) or role not in ROLES:
        raise TokenError(f"the token's role must be one of {', '.join(ROLES)}")
    if (
        not isinstance(actor, str)
        or not 0 < len(actor) <= MAX_ACTOR_CHARS
        or not _ACTOR.fullmatch(actor)
    ):
        raise TokenError("the token's actor must be 1 to 128 printable characters")
    if actor == SERVER_ACTOR:  # instances trust each other's writes under that name
        raise TokenError(f"the actor name {SERVER_ACTOR!r} is reserved for the server")
    return project, role, actor


def mint(
    keyring: Keyring,
    project: str,
    role: str,
    actor: str,
    ttl_s: float,
    *,
    now: float | None = None,
) -> str:
    """A token for `actor` as `role` on `project` (or "*"), valid for `ttl_s` seconds.

    A ttl of 0 or less gives a token that is already expired (useful in tests).
    """
    try:
        _check_claims(project, role, actor)
    except TokenError as exc:
        raise ValueError(str(exc)) from None
    issued = int(time.time() if now is None else now)
    expires = issued + int(ttl_s) if ttl_s > 0 else issued - 1
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": keyring.signing_kid}
    claims = {"project": project, "role": role, "actor": actor, "exp": expires, "iat": issued}
    signing_input = ".".join(
        _b64encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = _sign(keyring.keys[keyring.signing_kid], signing_input)
    return f"{signing_input}.{_b64encode(signature)}"


def verify(keyring: Keyring, token: str, *, now: float | None = None) -> Claims:
    """The claims of a valid token; TokenExpired or TokenError otherwise."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    header_b64, claims_b64, signature_b64 = parts
    header = _json_object(_b64decode(header_b64))
    if header.get("alg") != ALGORITHM:
        raise TokenError("unsupported token algorithm (only HS256 is accepted)")
    if header.get("typ", "JWT") != "JWT":
        raise TokenError("unsupported token type")
    kid = header.get("kid", DEFAULT_KID)
    key = keyring.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenError("unknown signing key")
    expected = _sign(key, f"{header_b64}.{claims_b64}")
    if not hmac.compare_digest(expected, _b64decode(signature_b64)):
        raise TokenError("bad token signature")
    claims = _json_object(_b64decode(claims_b64))
    project, role, actor = _check_claims(
        claims.get("project"), claims.get("role"), claims.get("actor")
    )
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise TokenError("the token has no integer exp")
    if expires <= (time.time() if now is None else now):
        raise TokenExpired("token expired")
    return Claims(project=project, role=role, actor=actor, expires_at=expires, kid=kid)
