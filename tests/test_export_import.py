"""Export and import (DESIGN.md section 9) through the real command line and a real
server: a project with 1,000 shots, 50 artifacts, budget activity and history goes
out and comes back under a new id exactly; damaged archives are refused whole; and
projects move from SQLite to Postgres (through S3) and back."""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pycrdt import Doc, Map

from blackboard.persistence.factory import make_store
from blackboard.persistence.replay import replay
from blackboard.schemas.views import doc_to_json
from blackboard.sync.authority.ledger import BudgetLedger
from blackboard.sync.client import Session
from blackboard.sync.projects.export_archive import SEAL_PREFIX, seal
from blackboard.sync.wire.yjs_encoding import decode_state_vector
from tests.support.api import create_project
from tests.support.cli import run_cli
from tests.support.s3_server import S3ServerProcess
from tests.support.server import ServerProcess, StartServer


async def write_shots(server: ServerProcess, project: str, start: int, count: int) -> None:
    """`count` shots in updates of 100 (each update one seq of history)."""
    async with Session(server.ws, project) as client:
        shots = client.doc.get("shots", type=Map)
        for base in range(start, start + count, 100):
            with client.doc.transaction():
                for n in range(base, min(base + 100, start + count)):
                    shots[f"S{n:04d}"] = Map({"title": f"shot {n}", "order": n, "status": "draft"})
        await client.flush()


async def budget_activity(http: httpx.AsyncClient, project: str) -> None:
    async def op(body: dict) -> dict:
        response = await http.post(f"/api/projects/{project}/budget/ops", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    reserved = await op({"op": "reserve", "amount": 300, "idempotency_key": "r1"})
    await op(
        {
            "op": "commit",
            "amount": 250,
            "reservation_id": reserved["reservation_id"],
            "idempotency_key": "c1",
        }
    )
    await op({"op": "charge", "amount": 99.5, "idempotency_key": "ch1"})
    await op({"op": "topup", "amount": 500, "idempotency_key": "t1"})


async def upload_artifacts(http: httpx.AsyncClient, project: str, count: int) -> dict[str, bytes]:
    bodies = {}
    for n in range(count):
        body = os.urandom(1000 + 97 * n)
        response = await http.put(
            f"/api/projects/{project}/artifacts/frame-{n}",
            content=body,
            headers={"Content-Type": "image/png"},
            params={"shot_id": f"S{n:04d}", "seed": str(n)},
        )
        assert response.status_code == 201, response.text
        bodies[f"frame-{n}"] = body
    return bodies


def state_vector(update: bytes) -> dict[int, int]:
    doc = Doc()
    doc.apply_update(update)
    return decode_state_vector(doc.get_state())


def manifest_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("manifest.json"))


async def test_round_trip_under_a_new_id(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server()
    data = ["--data-dir", str(server.data_dir)]
    await create_project(server, "film", budget_total=10_000)
    await write_shots(server, "film", 0, 500)
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        middle = (await http.get("/api/projects/film")).json()["seq"]
        await budget_activity(http, "film")
        await write_shots(server, "film", 500, 500)
        bodies = await upload_artifacts(http, "film", 50)

        archive = tmp_path / "film.zip"
        code, out, err = await run_cli(
            "export", "film", "--with-artifacts", "--out", str(archive), *data, env={}
        )
        assert code == 0, err
        manifest = manifest_of(archive)
        assert f"exported film at seq {manifest['seq']} (50 artifacts" in out
        assert err == ""  # no progress bar without a terminal
        with zipfile.ZipFile(archive) as zipped:
            names = set(zipped.namelist())
            history = zipped.read("history.jsonl").decode().splitlines()
            budget = json.loads(zipped.read("budget.json"))
        assert {"manifest.json", "update.bin", "doc.json", "budget.json", "history.jsonl"} < names
        assert len([n for n in names if n.startswith("artifacts/")]) == 50
        assert set(manifest["files"]) == names - {"manifest.json"}
        assert [json.loads(line)["seq"] for line in history] == list(range(1, manifest["seq"] + 1))
        assert [row["op"] for row in budget["ledger"]] == ["reserve", "commit", "charge", "topup"]

        code, out, err = await run_cli("import", str(archive), "--as", "film-copy", *data, env={})
        assert code == 0, err
        assert "imported film-copy" in out

        copy = (await http.get("/api/projects/film-copy")).json()
        original = (
            await http.get("/api/projects/film/state", params={"at_seq": manifest["seq"]})
        ).json()
        assert copy["doc"] == original["doc"]
        assert len(copy["doc"]["shots"]) == 1000 and len(copy["doc"]["artifacts"]) == 50
        copy_update = (await http.get("/api/projects/film-copy/update")).content
        exported = decode_state_vector(base64.b64decode(manifest["state_vector"]))
        assert state_vector(copy_update) == exported

        balances = {}
        for project in ("film", "film-copy"):
            balances[project] = (await http.get(f"/api/projects/{project}/budget")).json()
        keys = ("total", "reserved", "spent", "available", "currency")
        assert [balances["film-copy"][k] for k in keys] == [balances["film"][k] for k in keys]
        assert balances["film"]["spent"] == 349.5 and balances["film"]["total"] == 10_500
        ledger = (await http.get("/api/projects/film-copy/budget/ledger")).json()["items"]
        assert [row["op"] for row in ledger] == ["import"]
        assert ledger[0]["ref"] == f"film@{manifest['seq']}"

        for artifact_id, body in bodies.items():
            got = await http.get(f"/api/projects/film-copy/artifacts/{artifact_id}")
            assert got.status_code == 200 and got.content == body
            assert got.headers["content-type"] == "image/png"

        # The budget goes on from the imported account, and the mirror shows it.
        charged = await http.post(
            "/api/projects/film-copy/budget/ops",
            json={"op": "charge", "amount": 1, "idempotency_key": "after-import"},
        )
        assert charged.status_code == 200, charged.text
        copy = (await http.get("/api/projects/film-copy")).json()
        assert copy["doc"]["budget"]["spent"] == 350.5

        # As of a seq: the archive equals GET …/state?at_seq=N.
        as_of = tmp_path / "as-of.zip"
        code, _, err = await run_cli(
            "export", "film", "--at-seq", str(middle), "--out", str(as_of), *data, env={}
        )
        assert code == 0, err
        state = (await http.get("/api/projects/film/state", params={"at_seq": middle})).json()
        with zipfile.ZipFile(as_of) as zipped:
            assert json.loads(zipped.read("doc.json")) == state["doc"]
            assert not any(n.startswith("artifacts/") for n in zipped.namelist())
            assert json.loads(zipped.read("budget.json"))["ledger"] == []
        assert manifest_of(as_of)["seq"] == middle

        await refusals(archive, tmp_path, data, http)


def bad_archives(archive: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Damaged copies of `archive`: name -> (file, what the refusal must say)."""
    raw = archive.read_bytes()
    flipped = {}
    # Spread over member data, local headers and the central directory near the end.
    for at in (len(raw) // 4, len(raw) // 2, len(raw) * 3 // 4, len(raw) - 300):
        copy = bytearray(raw)
        copy[at] ^= 0x01
        flipped[f"flipped-{at}"] = (bytes(copy), "damaged")
    truncated = raw[: len(raw) * 2 // 3]
    with zipfile.ZipFile(archive) as source:
        manifest = json.loads(source.read("manifest.json"))
        members = {n: source.read(n) for n in source.namelist() if n != "manifest.json"}

    def rebuilt(manifest: dict, drop: str | None = None) -> bytes:
        """A well-sealed archive with other contents: what a tamperer who knows the
        format makes (the seal holds, so the checks of the contents must catch it)."""
        path = tmp_path / "rebuilt.zip"
        with zipfile.ZipFile(path, "w") as target:
            for name, body in members.items():
                if name != drop:
                    target.writestr(name, body)
            target.writestr("manifest.json", json.dumps(manifest))
            target.comment = SEAL_PREFIX + b"0" * 64
        seal(path)
        return path.read_bytes()

    unsealed = bytearray(raw)
    unsealed[-1] ^= 0x01
    in_a_header = bytearray(raw)
    in_a_header[4] ^= 0x01  # "version needed" of the first member, which readers skip
    cases = {
        **flipped,
        "unsealed": (bytes(unsealed), "its bytes do not match its seal"),
        "in-a-header": (bytes(in_a_header), "its bytes do not match its seal"),
        "truncated": (truncated, "damaged"),
        "future": (rebuilt({**manifest, "format_version": 2}), "unknown format_version 2"),
        "missing": (rebuilt(manifest, drop="budget.json"), "missing member budget.json"),
        "tampered": (
            rebuilt(
                {
                    **manifest,
                    "files": {**manifest["files"], "doc.json": {"size": 2, "sha256": "0" * 64}},
                }
            ),
            "doc.json does not match its sha256",
        ),
    }
    written = {}
    for name, (body, message) in cases.items():
        path = tmp_path / f"{name}.zip"
        path.write_bytes(body)
        written[name] = (path, message)
    return written


async def refusals(archive: Path, tmp_path: Path, data: list[str], http: httpx.AsyncClient) -> None:
    """Each bad archive is refused with one line and creates nothing."""
    for name, (path, message) in bad_archives(archive, tmp_path).items():
        code, out, err = await run_cli("import", str(path), "--as", f"bad-{name}", *data, env={})
        assert code == 1, (name, out, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (name, err)
        assert (await http.get(f"/api/projects/bad-{name}")).status_code == 404
        objects = Path(data[1]) / "objects" / "projects" / f"bad-{name}"
        assert not objects.exists(), name
    code, _, err = await run_cli("import", str(archive), "--as", "film", *data, env={})
    assert code == 1 and err.strip() == "blackboard: project 'film' already exists"


async def test_sqlite_to_postgres_through_s3_and_back(
    start_server: StartServer,
    s3_server: S3ServerProcess,
    pg_url: str,
    tmp_path: Path,
) -> None:
    # SQLite with its objects in one bucket -> an archive in that bucket -> Postgres with
    # its objects in another bucket -> a file -> a fresh SQLite with a data-dir folder.
    sqlite_s3 = s3_server.env(s3_server.config())
    server = await start_server(env=sqlite_s3)
    data = ["--data-dir", str(server.data_dir)]
    await create_project(server, "film", budget_total=5000)
    await write_shots(server, "film", 0, 200)
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        await budget_activity(http, "film")
        bodies = await upload_artifacts(http, "film", 3)
        original = (await http.get("/api/projects/film")).json()
    url = f"s3://{sqlite_s3['BLACKBOARD_S3_BUCKET']}/backups/film.zip"
    code, out, err = await run_cli(
        "export", "film", "--with-artifacts", "--out", url, *data, env=sqlite_s3
    )
    assert code == 0, err
    assert "(3 artifacts" in out
    pg_env = {"BLACKBOARD_DATABASE_URL": pg_url, **s3_server.env(s3_server.config())}
    pg_data = tmp_path / "pg-data"
    code, _, err = await run_cli("import", url, "--data-dir", str(pg_data), env=pg_env)
    assert code == 0, err

    store = make_store(pg_url, tmp_path)
    await store.open(migrate_schema=False)
    try:
        doc = replay(await store.load("film"))
        assert doc_to_json(doc) == {**original["doc"]}
        balances = await BudgetLedger(store.db).balances("film")
        assert balances is not None
        assert (balances.total, balances.spent, balances.currency) == (55_000_000, 3_495_000, "USD")
    finally:
        await store.close()

    # Postgres -> a file -> a fresh SQLite data dir; the artifacts come along.
    back = tmp_path / "back.zip"
    code, out, err = await run_cli(
        "export",
        "film",
        "--with-artifacts",
        "--out",
        str(back),
        "--data-dir",
        str(pg_data),
        env=pg_env,
    )
    assert code == 0, err
    assert "(3 artifacts" in out  # read back from the Postgres side's own bucket
    fresh = await start_server(data_dir=tmp_path / "fresh")
    code, _, err = await run_cli(
        "import", str(back), "--as", "film-back", "--data-dir", str(fresh.data_dir), env={}
    )
    assert code == 0, err
    async with httpx.AsyncClient(base_url=fresh.http, timeout=30) as http:
        again = (await http.get("/api/projects/film-back")).json()
        assert again["doc"] == original["doc"]
        for artifact_id, body in bodies.items():
            got = await http.get(f"/api/projects/film-back/artifacts/{artifact_id}")
            assert got.content == body


async def test_http_exports(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(env={"BLACKBOARD_HISTORY_RETENTION_S": "0"})
    await create_project(server, "film")
    await write_shots(server, "film", 0, 300)
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        await upload_artifacts(http, "film", 2)
        made = await http.post("/api/projects/film/exports", json={"with_artifacts": True})
        assert made.status_code == 201, made.text
        export = made.json()
        assert export["key"] == f"exports/film/{export['export_id']}.zip"
        as_of = await http.post("/api/projects/film/exports", json={"at_seq": 2})
        assert as_of.status_code == 201 and as_of.json()["seq"] == 2

        listed = (await http.get("/api/projects/film/exports")).json()["items"]
        assert [e["export_id"] for e in listed] == [export["export_id"], as_of.json()["export_id"]]
        assert [e["size"] for e in listed] == [export["size"], as_of.json()["size"]]
        got = await http.get(f"/api/projects/film/exports/{export['export_id']}")
        assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
        assert len(got.content) == export["size"]
        path = tmp_path / "http.zip"
        path.write_bytes(got.content)
        manifest = manifest_of(path)
        assert manifest["seq"] == export["seq"]
        assert len([n for n in manifest["files"] if n.startswith("artifacts/")]) == 2
        state = (await http.get("/api/projects/film/state", params={"at_seq": 2})).json()
        got = await http.get(f"/api/projects/film/exports/{as_of.json()['export_id']}")
        with zipfile.ZipFile(io.BytesIO(got.content)) as zipped:
            assert json.loads(zipped.read("doc.json")) == state["doc"]

        now = datetime.now(UTC).isoformat()
        by_time = await http.post("/api/projects/film/exports", json={"at_time": now})
        assert by_time.status_code == 201 and by_time.json()["seq"] == export["seq"]
        bad = await http.post("/api/projects/film/exports", json={"at_seq": 10_000})
        assert bad.status_code == 422
        negative = await http.post("/api/projects/film/exports", json={"at_seq": -1})
        assert negative.status_code == 422 and negative.json()["error"] == "invalid"
        # Every export's scratch folder is gone, the refused ones' too.
        assert list((server.data_dir / "tmp").iterdir()) == []
        assert (await http.get("/api/projects/film/exports/nope")).status_code == 404
        assert (await http.post("/api/projects/ghost/exports", json={})).status_code == 404

    code, _, err = await run_cli(
        "compact",
        "film",
        "--data-dir",
        str(server.data_dir),
        env={"BLACKBOARD_HISTORY_RETENTION_S": "0"},
    )
    assert code == 0, err
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        pruned = await http.post("/api/projects/film/exports", json={"at_seq": 2})
        assert pruned.status_code == 410 and pruned.json()["error"] == "history_pruned"
    code, _, err = await run_cli(
        "export",
        "film",
        "--at-seq",
        "2",
        "--out",
        str(tmp_path / "old.zip"),
        "--data-dir",
        str(server.data_dir),
        env={},
    )
    assert code == 1 and "no longer retained" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "old.zip").exists()
