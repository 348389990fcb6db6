"""Bad input to a real server (issue 12): each request here answered 500 (or a plain-text
panic) before; each is now a 422 with the JSON error shape and changes nothing. Run on
both backends: Postgres refuses a NUL in text and integers past int64, SQLite does not."""

from __future__ import annotations

import httpx

from tests.support.api import create_project
from tests.support.server import StartServer

BIG = "9" * 30
JSON = {"Content-Type": "application/json"}


def _deep(depth: int) -> bytes:
    return b'{"project_id": "deep", "title": "t", "budget_total": 1, "spec": {"a": ' + (
        b"[" * depth + b"]" * depth + b"}}"
    )


def _assert_refused(response: httpx.Response, what: object) -> None:
    assert response.status_code == 422, (what, response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "detail"}, (what, body)


async def test_bad_query_parameters_are_422(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "film")
    bad = [
        ("/api/projects/film/history", {"cursor": "²"}),
        ("/api/projects/film/history", {"cursor": "\u0661"}),  # an Arabic-Indic 1
        ("/api/projects/film/history", {"cursor": BIG}),
        ("/api/projects/film/history", {"cursor": str(2**63)}),
        ("/api/projects/film/history", {"limit": "1_0"}),
        ("/api/projects/film/budget/ledger", {"cursor": "²"}),
        ("/api/projects/film/budget/ledger", {"cursor": BIG}),
        ("/api/projects/film/corrections", {"cursor": f"{BIG}.1"}),
        ("/api/projects/film/state", {"at_seq": "²"}),
        ("/api/projects/film/state", {"at_seq": BIG}),
        ("/api/projects/film/state", {"at_time": "0001-01-01T00:00:00+14:00"}),
        ("/api/projects", {"cursor": "film\x00"}),
        ("/api/projects", {"cursor": "\x00"}),
    ]
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for path, params in bad:
            _assert_refused(await http.get(path, params=params), (path, params))
        assert (await http.get("/api/projects/film/history")).status_code == 200


async def test_bad_json_bodies_are_422_and_create_nothing(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    body = b'{"project_id": "%s", "title": "t", "budget_total": 1, %s}'
    bad = {
        "5,000 deep": _deep(5000),
        "100,000 deep": _deep(100_000),
        "33 deep": _deep(33),
        "surrogate currency": body % (b"s1", b'"currency": "\\ud800SD"'),
        "surrogate title": body % (b"s2", b'"title": "a\\udfffb"'),
        "surrogate key": body % (b"s3", b'"spec": {"\\ud800": 1}'),
        "30-digit spec": body % (b"i1", b'"spec": {"a": ' + BIG.encode() + b"}"),
        "1e400 spec": body % (b"f1", b'"spec": {"a": 1e400}'),
        "lower currency": body % (b"c1", b'"currency": "usd"'),
        "long currency": body % (b"c2", b'"currency": "USDX"'),
        "non-ASCII currency": body % (b"c3", '"currency": "ÜSD"'.encode()),
        "long title": body % (b"t1", b'"title": "' + b"x" * 201 + b'"'),
    }
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for what, content in bad.items():
            response = await http.post("/api/projects", content=content, headers=JSON)
            _assert_refused(response, what)
        assert (await http.get("/api/projects")).json()["items"] == []
        # Within the bounds it works: 32 deep, a 15-digit integer, a 200-character title.
        ok = body % (b"ok", b'"title": "' + b"x" * 200 + b'", "spec": {"n": 123456789012345}')
        response = await http.post("/api/projects", content=ok, headers=JSON)
        assert response.status_code == 201, response.text
        response = await http.post("/api/projects", content=_deep(30), headers=JSON)
        assert response.status_code == 201, response.text


async def test_free_text_fields_of_ops_and_leases_are_capped(
    backend_env: dict[str, str], start_server: StartServer
) -> None:
    server = await start_server(env=backend_env)
    await create_project(server, "film")
    long = "x" * 257
    ops = [
        {"op": "charge", "amount": 1, "idempotency_key": "k" * 256},
        {"op": "charge", "amount": 1, "idempotency_key": "k", "ref": long},
        {"op": "commit", "reservation_id": long, "idempotency_key": "k"},
        {"op": "commit", "reservation_id": "r\x00", "idempotency_key": "k"},
    ]
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for op in ops:
            _assert_refused(await http.post("/api/projects/film/budget/ops", json=op), op)
        lease = {"action": "claim", "holder": long, "idempotency_key": "k"}
        # The body is checked before the task is looked up (there is none).
        _assert_refused(await http.post("/api/projects/film/tasks/T1/lease", json=lease), lease)
        assert (await http.get("/api/projects/film/budget/ledger")).json()["items"] == []
