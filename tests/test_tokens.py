"""Tokens: minted and verified with a keyring; every malformed or forged token refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from blackboard.web.tokens import (
    MAX_TOKEN_CHARS,
    Keyring,
    TokenError,
    TokenExpired,
    mint,
    verify,
)

SECRET = "k1:0123456789abcdef0123"
NOW = 1_800_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_round_trip() -> None:
    keyring = Keyring.parse(SECRET)
    token = mint(keyring, "film", "write", "agent-7", 60, now=NOW)
    claims = verify(keyring, token, now=NOW + 59)
    assert (claims.project, claims.role, claims.actor, claims.kid) == (
        "film",
        "write",
        "agent-7",
        "k1",
    )
    assert claims.expires_at == NOW + 60


def test_expiry_without_leeway_and_ttl_zero_is_expired() -> None:
    keyring = Keyring.parse(SECRET)
    with pytest.raises(TokenExpired):
        verify(keyring, mint(keyring, "film", "read", "a", 60, now=NOW), now=NOW + 60)
    for ttl in (0, -5):
        with pytest.raises(TokenExpired):
            verify(keyring, mint(keyring, "film", "read", "a", ttl, now=NOW), now=NOW)


def test_rotation_first_key_signs_every_key_verifies() -> None:
    old = Keyring.parse("old:0123456789abcdef-old")
    rotated = Keyring.parse("new:0123456789abcdef-new, old:0123456789abcdef-old")
    assert rotated.signing_kid == "new"
    old_token = mint(old, "*", "admin", "ops", 60, now=NOW)
    assert verify(rotated, old_token, now=NOW).kid == "old"
    new_token = mint(rotated, "*", "admin", "ops", 60, now=NOW)
    assert verify(rotated, new_token, now=NOW).kid == "new"
    # Dropping the old key revokes what it signed.
    with pytest.raises(TokenError, match="unknown signing key"):
        verify(Keyring.parse("new:0123456789abcdef-new"), old_token, now=NOW)


def test_a_single_secret_gets_the_default_kid() -> None:
    keyring = Keyring.parse("a-single-secret-long-enough")
    assert keyring.signing_kid == "default"
    assert verify(keyring, mint(keyring, "p", "read", "a", 5, now=NOW), now=NOW).kid == "default"


@pytest.mark.parametrize(
    "text",
    ["", " , ", "k1:short", "k1:0123456789abcdef,k1:0123456789abcdef", "bad kid:0123456789abcdef"],
)
def test_bad_secret_settings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Keyring.parse(text)


def test_forged_and_malformed_tokens_are_refused() -> None:
    keyring = Keyring.parse(SECRET)
    key = keyring.keys["k1"]
    good = mint(keyring, "film", "read", "a", 60, now=NOW)
    claims = {"project": "film", "role": "admin", "actor": "a", "exp": NOW + 60}
    header_b64, claims_b64, signature_b64 = good.split(".")
    tampered_claims = b64(json.dumps({**claims, "role": "admin"}).encode())
    bad_tokens = {
        "empty": "",
        "two parts": f"{header_b64}.{claims_b64}",
        "four parts": good + ".x",
        "padding": good + "=",
        "non-ascii": good + "é",
        "too long": "a" * (MAX_TOKEN_CHARS + 1),
        "claims swapped, old signature": f"{header_b64}.{tampered_claims}.{signature_b64}",
        "alg none": forge({"alg": "none", "kid": "k1"}, claims, key).rsplit(".", 1)[0] + ".",
        "alg none, signed": forge({"alg": "none", "kid": "k1"}, claims, key),
        "alg HS512": forge({"alg": "HS512", "kid": "k1"}, claims, key),
        "alg RS256": forge({"alg": "RS256", "kid": "k1"}, claims, key),
        "unknown kid": forge({"alg": "HS256", "kid": "k9"}, claims, key),
        "kid not a string": forge({"alg": "HS256", "kid": 1}, claims, key),
        "wrong key": forge({"alg": "HS256", "kid": "k1"}, claims, b"another-key-0123456789"),
        "header not an object": f"{b64(b'[1]')}.{claims_b64}.{signature_b64}",
        "header not json": f"{b64(b'{')}.{claims_b64}.{signature_b64}",
        "bad role": forge({"alg": "HS256", "kid": "k1"}, {**claims, "role": "root"}, key),
        "bad project": forge({"alg": "HS256", "kid": "k1"}, {**claims, "project": "../x"}, key),
        "empty actor": forge({"alg": "HS256", "kid": "k1"}, {**claims, "actor": ""}, key),
        "control char actor": forge({"alg": "HS256", "kid": "k1"}, {**claims, "actor": "a\n"}, key),
        "the server's actor": forge(
            {"alg": "HS256", "kid": "k1"}, {**claims, "actor": "server"}, key
        ),
        "float exp": forge({"alg": "HS256", "kid": "k1"}, {**claims, "exp": NOW + 0.5}, key),
        "bool exp": forge({"alg": "HS256", "kid": "k1"}, {**claims, "exp": True}, key),
        "no exp": forge(
            {"alg": "HS256", "kid": "k1"}, {k: v for k, v in claims.items() if k != "exp"}, key
        ),
    }
    for name, token in bad_tokens.items():
        with pytest.raises(TokenError):
            verify(keyring, token, now=NOW)
            pytest.fail(f"accepted: {name}")
    # The same claims, properly signed, pass: the refusals above are about the forgery.
    assert verify(keyring, forge({"alg": "HS256", "kid": "k1"}, claims, key), now=NOW).role == (
        "admin"
    )


def test_mint_refuses_bad_claims() -> None:
    keyring = Keyring.parse(SECRET)
    with pytest.raises(ValueError):
        mint(keyring, "film", "owner", "a", 60)
    with pytest.raises(ValueError):
        mint(keyring, "bad id!", "read", "a", 60)
    with pytest.raises(ValueError):
        mint(keyring, "film", "read", "", 60)


def test_a_secret_that_looks_like_another_kind_of_key_is_refused() -> None:
    ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8"
    with pytest.raises(ValueError, match="cannot sign"):
        Keyring.parse(f"k1:{ssh_public_key}")


def test_required_claims_and_unknown_critical_headers_are_refused() -> None:
    keyring = Keyring.parse(SECRET)
    key = keyring.keys["k1"]
    claims = {"project": "film", "role": "read", "actor": "a", "exp": NOW + 60}
    for name in ("project", "role", "actor"):
        without = {k: v for k, v in claims.items() if k != name}
        with pytest.raises(TokenError, match=f"the token has no {name}"):
            verify(keyring, forge({"alg": "HS256", "kid": "k1"}, without, key), now=NOW)
    critical = {"alg": "HS256", "kid": "k1", "crit": ["exp-ext"], "exp-ext": 1}
    with pytest.raises(TokenError, match="malformed token"):
        verify(keyring, forge(critical, claims, key), now=NOW)
    # An `iat` ahead of the clock is information, not a refusal (as before PyJWT).
    later = forge({"alg": "HS256", "kid": "k1"}, {**claims, "iat": NOW + 30}, key)
    assert verify(keyring, later, now=NOW).actor == "a"
