"""Fuzzing every HTTP route (issue 12): whatever the path parameters, query parameters
and body, the answer is never a 500, and a 4xx is always `{"error": code, "detail":
text}`.

Routes come from the app itself, query parameter and body field names from the source of
`web/` (what the endpoints read), so a new route or parameter is fuzzed without touching
this file. Values are drawn from nasty strings (unicode digits, lone surrogates, NUL,
huge integers, NaN/Infinity literals, very long text) and bodies from nested, huge and
malformed JSON. The app runs in process (Starlette's TestClient) on SQLite; a shorter
pass runs on Postgres, which refuses NUL in text where SQLite stores it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map
from starlette.routing import Route
from starlette.testclient import TestClient

from blackboard.web.app import create_app
from blackboard.web.settings import Settings
from tests.support.backends import create_database, drop_database

WEB = Path(__file__).resolve().parents[1] / "web"
PROJECT, TASK = "p", "T1"

NASTY = [
    "",
    "0",
    "1",
    "-1",
    "²",
    "\u0661\u0662",  # Arabic-Indic 12
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate
    "9" * 30,
    "9223372036854775807",
    "9223372036854775808",
    "1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    " 12 ",
    "1_000",
    "+5",
    "5.",
    "0.00001",
    "1.2.3",
    "x" * 5000,
    "../..",
    "%00",
    "\u202e",
    "😀",
    "USD",
    "usd",
    "2026-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "AA==",
    "AAAA",
    "1.1",
    PROJECT,
    TASK,
]
nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))


def _names_read(pattern: str) -> list[str]:
    """The names `pattern` (one group) finds in the source of `web/`."""
    found = {m for path in WEB.rglob("*.py") for m in re.findall(pattern, path.read_text())}
    return sorted(found)


QUERY_NAMES = sorted(
    {
        *_names_read(r'query_params(?:\.get\(|\[)"(\w+)"'),
        *_names_read(r'(?<!_)params\["(\w+)"\]'),
        *_names_read(r'"(\w+)" in params'),
    }
)
BODY_NAMES = _names_read(r'(?:body\.get\(|_field\(body, )"(\w+)"')
WORDS = ["charge", "reserve", "commit", "release", "topup", "claim", "renew", "USD"]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),  # NaN and ±Infinity included: json.dumps writes them as literals
    nasty_text,
    st.sampled_from(WORDS),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)
    ),
    max_leaves=12,
)
json_object = st.dictionaries(
    st.one_of(st.sampled_from(BODY_NAMES), nasty_text), json_value, max_size=8
)


def _deep(depth: int) -> bytes:
    return b'{"spec": ' + b"[" * depth + b"]" * depth + b"}"


raw_body = st.one_of(
    st.sampled_from([b"", b"null", b"[]", b"{", b"NaN", _deep(40), _deep(5000), _deep(200_000)]),
    st.binary(max_size=64),
    json_object.map(lambda body: json.dumps(body).encode()),  # ensure_ascii: "\ud800" escapes
)


def _routes() -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path template, path parameters) of every HTTP route of the app."""
    found = []
    for route in create_app(Settings()).routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, route.path, tuple(route.param_convertors)))
    return found


ROUTES = _routes()


def _quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method, template, names = draw(st.sampled_from(ROUTES))
    path = template
    for name in names:
        known = {"project_id": PROJECT, "task_id": TASK}.get(name, "x")
        value = draw(st.one_of(st.just(known), nasty_text))
        path = path.replace("{" + name + "}", _quoted(value) or "%20")
    params = draw(st.dictionaries(st.sampled_from([*QUERY_NAMES, "x"]), nasty_text, max_size=3))
    query = "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in params.items())
    body = draw(raw_body) if method in ("POST", "PUT") else b""
    return method, f"{path}?{query}" if query else path, body


def _check(client: TestClient, request: tuple[str, str, bytes]) -> None:
    method, url, body = request
    response = client.request(
        method, url, content=body, headers={"Content-Type": "application/json"}
    )
    shown = (method, url[:300], body[:300])  # a 200,000-deep body is not worth printing
    assert response.status_code < 500, (shown, response.status_code, response.text)
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"error", "detail"}, (shown, response.text)
        assert isinstance(error["error"], str) and isinstance(error["detail"], str)


def _with_project(client: TestClient) -> None:
    """A project with a task (for the lease route), a repair and a ledger row, so the
    routes reach their storage and not only their 404."""
    body = {"project_id": PROJECT, "title": "t", "budget_total": 100}
    assert client.post("/api/projects", json=body).status_code == 201
    doc = Doc()
    with doc.transaction():
        doc.get("tasks", type=Map)[TASK] = Map({"kind": "render", "attempt": "2"})
    written = client.post(f"/api/projects/{PROJECT}/update", content=doc.get_update())
    assert written.status_code == 200, written.text
    op = {"op": "charge", "amount": 1, "idempotency_key": "k"}
    assert client.post(f"/api/projects/{PROJECT}/budget/ops", json=op).status_code == 200


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    with TestClient(app, raise_server_exceptions=False) as client:
        _with_project(client)
        yield client


@pytest.fixture
def postgres_client(tmp_path: Path) -> Iterator[TestClient]:
    url = asyncio.run(create_database())
    try:
        app = create_app(Settings(data_dir=tmp_path / "data", database_url=url))
        with TestClient(app, raise_server_exceptions=False) as client:
            _with_project(client)
            yield client
    finally:
        asyncio.run(drop_database(url))


def test_the_names_fuzzed_are_found_in_the_source() -> None:
    # Guards the source scan: a refactor that hides them would fuzz nothing.
    assert {"limit", "cursor", "at_seq", "at_time", "state_vector"} <= set(QUERY_NAMES)
    assert {"amount", "currency", "spec", "idempotency_key", "holder"} <= set(BODY_NAMES)
    assert len(ROUTES) >= 15


def test_no_route_answers_500_on_sqlite(sqlite_client: TestClient) -> None:
    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=requests())
    def run(request: tuple[str, str, bytes]) -> None:
        _check(sqlite_client, request)

    run()


NUL_VALUES = ["\x00", "a\x00b", "1\x00", f"{PROJECT}\x00"]


def _nul_requests() -> Iterator[tuple[str, str, bytes]]:
    """Every route with each query parameter, then each body field, holding a NUL (the
    path parameters name the project and its task, so the requests reach storage)."""
    for method, template, _ in ROUTES:
        path = template.replace("{project_id}", PROJECT).replace("{task_id}", TASK)
        for name in QUERY_NAMES:
            for value in NUL_VALUES:
                yield method, f"{path}?{name}={_quoted(value)}", b""
        if method in ("POST", "PUT"):
            for word in WORDS:  # each op and action, so each reaches its own checks
                for name in BODY_NAMES:
                    body = {field: word for field in BODY_NAMES} | {name: NUL_VALUES[1]}
                    yield method, path, json.dumps(body).encode()


def test_no_route_answers_500_on_a_nul_on_postgres(postgres_client: TestClient) -> None:
    for request in _nul_requests():
        _check(postgres_client, request)
