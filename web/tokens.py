"""Access tokens: HMAC-SHA256-signed claims, minted and verified with a keyring.

A token is a JWT in compact form signed with HS256 (any JWT library can mint one); this
module mints and verifies them through PyJWT:

    header: {"alg": "HS256", "typ": "JWT", "kid": "<key id>"}
    claims: {"project": "<id>" | "*", "role": "read" | "write" | "admin",
             "actor": "<name>", "exp": <unix seconds>, "iat": <unix seconds>}

Keys come from BLACKBOARD_AUTH_SECRET: `kid:secret` pairs separated by commas. The first
pair signs; every pair verifies, so a secret is rotated by putting a new pair first,
waiting for old tokens to expire, then dropping the old pair. A single secret without a
`kid:` prefix gets the key id `default`.

Verification is strict and bounded: the length and the shape (three unpadded base64url
segments) are checked before anything is decoded, the key is the one the header's `kid`
names, the algorithm must be exactly HS256 (no `none`, no asymmetric algorithms, no other
hashes), the signature is checked before the claims are used, `project`, `role`, `actor`
and `exp` are required, and `exp` is checked without leeway, here, against this module's
clock (`now`: PyJWT reads the wall clock itself, which tests cannot set).
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt

from blackboard.schemas.document import is_valid_id
from blackboard.sync.room.origin import SERVER_ACTOR

ALGORITHM = "HS256"
ROLES = ("read", "write", "admin")  # each includes what the ones before it may do
ALL_PROJECTS = "*"
DEFAULT_KID = "default"
MAX_TOKEN_CHARS = 4096
MAX_ACTOR_CHARS = 128
MIN_SECRET_CHARS = 16
REQUIRED_CLAIMS = ("project", "role", "actor", "exp")
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
# Three unpadded base64url segments (PyJWT itself would accept padding and empty parts).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ACTOR = re.compile(r"[^\x00-\x1f\x7f]+")
# Claims are checked here (`exp` against `now`); PyJWT checks the signature, the
# algorithm and that the required claims are present.
_DECODE_OPTIONS: Any = {
    "require": list(REQUIRED_CLAIMS),
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}


@contextlib.contextmanager
def _own_key_length_rule() -> Iterator[None]:
    """The keyring has its own minimum (MIN_SECRET_CHARS; the README's example secret is
    32 random bytes): PyJWT's advice on keys under 32 bytes would repeat on every token."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        yield


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
            try:  # PyJWT refuses secrets that look like other keys (PEM, SSH, a JWK)
                with _own_key_length_rule():
                    jwt.encode({}, secret, algorithm=ALGORITHM)
            except jwt.InvalidKeyError as exc:
                raise ValueError(f"the secret of key {kid!r} cannot sign: {exc}") from None
            keys[kid] = secret.encode()
        return cls(signing_kid=next(iter(keys)), keys=keys)


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
    claims = {"project": project, "role": role, "actor": actor, "exp": expires, "iat": issued}
    kid = keyring.signing_kid
    with _own_key_length_rule():
        return jwt.encode(claims, keyring.keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


def verify(keyring: Keyring, token: str, *, now: float | None = None) -> Claims:
    """The claims of a valid token; TokenExpired or TokenError otherwise."""
    if not token or len(token) > MAX_TOKEN_CHARS or not _COMPACT.fullmatch(token):
        raise TokenError("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenError("malformed token") from None
    if header.get("typ", "JWT") != "JWT":
        raise TokenError("unsupported token type")
    kid = header.get("kid", DEFAULT_KID)
    key = keyring.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenError("unknown signing key")
    try:
        with _own_key_length_rule():
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
    except jwt.InvalidAlgorithmError:
        raise TokenError("unsupported token algorithm (only HS256 is accepted)") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bad token signature") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token has no {exc.claim}") from None
    except jwt.InvalidTokenError:
        raise TokenError("malformed token") from None
    project, role, actor = _check_claims(
        claims.get("project"), claims.get("role"), claims.get("actor")
    )
    expires = claims["exp"]
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise TokenError("the token has no integer exp")
    if expires <= (time.time() if now is None else now):
        raise TokenExpired("token expired")
    return Claims(project=project, role=role, actor=actor, expires_at=expires, kid=kid)
