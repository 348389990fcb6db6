"""NaN and ±Infinity (issue 12): a stock JS client can write them (`m.set('x', 1/0)`);
the server repairs them wherever they sit, records the repair, and every JSON view keeps
answering, for the repaired document and for a state from before the repair."""

from __future__ import annotations

import json
import math

import httpx
from pycrdt import Array, Doc, Map

from blackboard.schemas.views import doc_to_json, json_bytes
from tests.support.api import create_project, eventually, history, project_json
from tests.support.js import JsClients
from tests.support.server import ServerProcess

SHOT = {
    "title": "Opening",
    "duration_s": "NaN",  # a known number field
    "extra": "Infinity",  # an unknown field
    "nested": {"deep": [1, "-Infinity"], "ok": 2},  # deeper, in a Map and an Array
}


async def test_non_finite_numbers_from_a_js_client_are_repaired_and_served(
    server: ServerProcess, js: JsClients
) -> None:
    await create_project(server, "film")
    await js.connect("a", server.ws, "film")
    await js.connect("b", server.ws, "film")
    await js.call("set", name="a", path=["shots", "S1"], value=SHOT, nonFinite=True)
    await js.call("set", name="a", path=["spec", "ratio"], value="NaN", nonFinite=True)
    # A plain object (one JSON value) with a non-finite number inside, as a task's result.
    task = {"kind": "render", "result": {"score": "Infinity", "ok": True}}
    await js.call("set", name="a", path=["tasks", "T1"], value=task, plain=True, nonFinite=True)

    repaired_shot = {"title": "Opening", "nested": {"deep": [1, None], "ok": 2}}
    for name in ("a", "b"):  # the author and everyone else get the repair
        await js.call("waitFor", name=name, path=["shots", "S1"], value=repaired_shot)
        await js.call("waitFor", name=name, path=["spec"], value={"title": "film"})

    async def served() -> None:
        doc = (await project_json(server, "film"))["doc"]
        assert doc["shots"]["S1"] == repaired_shot
        assert "ratio" not in doc["spec"]
        assert doc["tasks"]["T1"] == {"kind": "render", "result": {"score": None, "ok": True}}

    await eventually(served)

    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.get("/api/projects/film/corrections")
        assert response.status_code == 200, response.text
        found = {(c["path"], c["rule"], c["after"] is None) for c in response.json()["items"]}
        assert {
            ("shots/S1/duration_s", "non_finite", True),
            ("shots/S1/extra", "non_finite", True),
            ("shots/S1/nested", "non_finite", False),
            ("spec/ratio", "non_finite", True),
            ("tasks/T1/result", "non_finite", False),
        } <= found, found
        # A state from before the repairs holds the numbers as written: still servable.
        for seq, actor in await history(server, "film"):
            response = await http.get("/api/projects/film/state", params={"at_seq": seq})
            assert response.status_code == 200, (seq, actor, response.text)
        entries = await history(server, "film")
        repaired_at = next(seq for seq, actor in entries[1:] if actor == "server")
        response = await http.get("/api/projects/film/state", params={"at_seq": repaired_at - 1})
        assert response.json()["doc"]["shots"]["S1"]["duration_s"] is None, entries


async def test_a_non_finite_or_huge_number_in_a_new_projects_spec_is_refused(
    server: ServerProcess,
) -> None:
    bodies = {
        "overflow": b'{"project_id": "p1", "title": "t", "budget_total": 1, "spec": {"a": 1e400}}',
        "literal": b'{"project_id": "p2", "title": "t", "budget_total": 1, "spec": {"a": NaN}}',
        "huge int": b'{"project_id": "p3", "title": "t", "budget_total": 1,'
        b' "spec": {"a": 123456789012345678901234567890}}',
    }
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for what, body in bodies.items():
            response = await http.post(
                "/api/projects", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code in (400, 422), (what, response.text)
            assert set(response.json()) == {"error", "detail"}, what
        listed = (await http.get("/api/projects")).json()["items"]
        assert listed == []  # nothing was created


async def test_non_finite_numbers_over_http_are_repaired(server: ServerProcess) -> None:
    await create_project(server, "film")
    doc = Doc()
    with doc.transaction():
        doc.get("dna_bank", type=Map)["C1"] = Map(
            {"name": "Ana", "embedding": Array([0.5, math.nan, -math.inf])}
        )
        doc.get("approvals", type=Map)["A1"] = {"subject": "S1", "score": math.inf}  # plain
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        response = await http.post("/api/projects/film/update", content=doc.get_update())
        assert response.status_code == 200, response.text
        doc_json = (await project_json(server, "film"))["doc"]
        assert doc_json["dna_bank"]["C1"] == {"name": "Ana", "embedding": [0.5, None, None]}
        assert doc_json["approvals"]["A1"] == {"subject": "S1"}
        rules = {
            (c["path"], c["rule"])
            for c in (await http.get("/api/projects/film/corrections")).json()["items"]
        }
        assert rules == {
            ("dna_bank/C1/embedding", "non_finite"),
            ("approvals/A1", "plain_entry"),
            ("approvals/A1/score", "non_finite"),
        }


def test_every_value_a_document_can_hold_is_served_as_strict_json() -> None:
    doc = Doc()
    shots = doc.get("shots", type=Map)
    with doc.transaction():  # as loaded from a log written before the repair rule
        shots["S1"] = Map({"d": math.nan, "deep": Array([math.inf, {"x": -math.inf}])})
        shots["S2"] = Map({"bin": b"\x00\x01", "t": "é"})
    served = json.loads(json_bytes({"doc": doc_to_json(doc), "note": "\ud800"}))
    assert served["doc"]["shots"] == {
        "S1": {"d": None, "deep": [None, {"x": None}]},
        "S2": {"bin": "AAE=", "t": "é"},
    }
    assert served["note"] == "\ud800"  # escaped, still JSON
    assert json_bytes({"t": "é", "n": 2.5}) == '{"t":"é","n":2.5}'.encode()  # strict pass
