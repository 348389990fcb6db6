"""`GET /metrics` on a real server: the counters move exactly as the workload says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Map

from blackboard.sync.wire.protocol import (
    AwarenessEntry,
    MessageType,
    awareness_message,
    encode_awareness,
    sync_step1,
    sync_update,
)
from blackboard.web.tokens import Keyring, mint
from tests.support.api import create_project, eventually
from tests.support.server import ServerProcess, StartServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SECRET = "m1:metrics-test-secret-0123456789"


async def get_metrics(server: ServerProcess, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{server.http}/metrics", headers=headers)


async def scrape(server: ServerProcess, token: str | None = None) -> Samples:
    response = await get_metrics(server, token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def _updates(count: int) -> list[bytes]:
    doc = Doc()
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    for i in range(count):
        doc.get("spec", type=Map)["logline"] = f"take {i}"
    return out


async def _connect(
    server: ServerProcess, project: str, query: str = ""
) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"{server.ws}/sync/{project}{query}", compression=None, open_timeout=10
    )
    with contextlib.suppress(websockets.ConnectionClosed):  # a refusal may come first
        await ws.send(sync_step1(b"\x00"))
    return ws


async def _frames_until(
    ws: websockets.ClientConnection, done: Callable[[list[bytes]], bool], timeout: float = 10
) -> list[bytes]:
    frames: list[bytes] = []

    async def read() -> None:
        while not done(frames):
            frames.append(await ws.recv())

    await asyncio.wait_for(read(), timeout)
    return frames


async def _close_code(ws: websockets.ClientConnection) -> int | None:
    try:
        await asyncio.wait_for(_frames_until(ws, lambda _: False), 10)
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def test_counters_follow_a_small_workload(
    start_server: StartServer,
) -> None:
    # A short idle time, so the room unloads (and compacts) once both clients leave.
    server = await start_server(env={"BLACKBOARD_ROOM_IDLE_S": "0.5"})
    await create_project(server, "film-m")
    before = await scrape(server)
    assert value(before, "blackboard_connections") == 0
    assert value(before, "blackboard_rooms_loaded") == 0

    writer = await _connect(server, "film-m", "?ack=1")
    reader = await _connect(server, "film-m")
    updates = _updates(5)
    for update in updates:
        await writer.send(sync_update(update))
    acks = await _frames_until(writer, lambda got: bytes([MessageType.ACK, 5]) in got)
    assert acks
    await _frames_until(reader, lambda got: sum(f[:2] == b"\x00\x02" for f in got) == 5)
    presence = AwarenessEntry(4242, 1, '{"user":"writer"}')
    await writer.send(awareness_message(encode_awareness([presence])))
    await _frames_until(reader, lambda got: any(f[0] == MessageType.AWARENESS for f in got))

    during = await scrape(server)
    assert value(during, "blackboard_connections") == 2
    assert value(during, "blackboard_rooms_loaded") == 1
    assert value(during, "blackboard_send_queue_bytes") == 0  # everything was delivered
    assert delta(before, during, "blackboard_joins_total") == 2
    assert delta(before, during, "blackboard_updates_in_total", source="client") == 5
    assert delta(before, during, "blackboard_updates_out_total") == 5  # one other client
    bytes_in = delta(before, during, "blackboard_update_bytes_in_total", source="client")
    assert bytes_in > 0
    assert delta(before, during, "blackboard_update_bytes_out_total") == bytes_in
    assert delta(before, during, "blackboard_awareness_in_total") == 1
    assert delta(before, during, "blackboard_event_loop_lag_seconds_count") > 0  # sampled
    server_updates = delta(before, during, "blackboard_updates_in_total", source="server")
    logged = delta(before, during, "blackboard_log_batch_rows_sum")
    assert logged == 5 + server_updates  # every change is committed once
    assert 1 <= delta(before, during, "blackboard_log_batch_rows_count") <= logged
    assert delta(before, during, "blackboard_log_commit_seconds_count") == value(
        during, "blackboard_log_batch_rows_count"
    ) - value(before, "blackboard_log_batch_rows_count")

    await writer.close()
    await reader.close()

    async def unloaded() -> None:
        now = await scrape(server)
        assert value(now, "blackboard_connections") == 0
        assert value(now, "blackboard_rooms_loaded") == 0
        assert delta(before, now, "blackboard_compaction_seconds_count") == 1

    await eventually(unloaded)
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        history = (await http.get("/api/projects/film-m/history?limit=1000")).json()["items"]
    after = await scrape(server)
    # The one compaction folded every row of the log (creation + the accepted updates).
    assert delta(before, after, "blackboard_compacted_rows_total") == len(history)
    assert len(history) == 1 + logged


async def test_refusals_are_counted_by_code(server: ServerProcess) -> None:
    await create_project(server, "film-r")
    before = await scrape(server)

    unknown = await _connect(server, "no-such-film")
    assert await _close_code(unknown) == 4404
    malformed = await _connect(server, "film-r")
    await malformed.send(b"\x00\x07garbage")
    assert await _close_code(malformed) == 4400
    text = await _connect(server, "film-r")
    await text.send("hello")
    assert await _close_code(text) == 4400
    polite = await _connect(server, "film-r")
    await polite.close()  # a normal goodbye is no refusal

    async def counted() -> None:
        after = await scrape(server)
        assert (
            delta(before, after, "blackboard_refusals_total", code="4404", reason="unknown_project")
            == 1
        )
        assert (
            delta(before, after, "blackboard_refusals_total", code="4400", reason="malformed") == 2
        )
        refusals = sum(
            v - before.get(k, 0.0) for k, v in after.items() if k[0] == "blackboard_refusals_total"
        )
        assert refusals == 3
        assert value(after, "blackboard_connections") == 0

    await eventually(counted)


async def test_metrics_need_an_admin_token_when_auth_is_on(
    start_server: StartServer,
) -> None:
    server = await start_server(env={"BLACKBOARD_AUTH_SECRET": SECRET})
    keyring = Keyring.parse(SECRET)
    assert (await get_metrics(server)).status_code == 401
    refused = await get_metrics(server, mint(keyring, "*", "read", "dashboard", 600))
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    before = await scrape(server, mint(keyring, "*", "admin", "ops", 600))
    # A socket refused at the door (no token) is counted like any other refusal.
    ws = await websockets.connect(f"{server.ws}/sync/film-x", compression=None, open_timeout=10)
    assert await _close_code(ws) == 4401
    after = await scrape(server, mint(keyring, "*", "admin", "ops", 600))
    assert (
        delta(before, after, "blackboard_refusals_total", code="4401", reason="unauthorized") == 1
    )


async def test_repairs_are_counted_by_rule(server: ServerProcess) -> None:
    await create_project(server, "film-fix")
    before = await scrape(server)
    doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    spec = doc.get("spec", type=Map)
    spec["fps"] = "24"  # a number field given text: coerced by the server
    doc.get("shots", type=Map)["bad id!"] = Map({"title": "x"})  # an id that does not match
    ws = await _connect(server, "film-fix")
    for update in updates:
        await ws.send(sync_update(update))
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:

        async def listed() -> None:
            items = (await http.get("/api/projects/film-fix/corrections")).json()["items"]
            assert {item["path"] for item in items} >= {"spec/fps", "shots/bad id!"}

        await eventually(listed)
        items = (await http.get("/api/projects/film-fix/corrections")).json()["items"]
    after = await scrape(server)
    for rule in {item["rule"] for item in items}:
        expected = sum(item["rule"] == rule for item in items)
        assert delta(before, after, "blackboard_repairs_total", rule=rule) == expected
    total = sum(
        v - before.get(k, 0.0) for k, v in after.items() if k[0] == "blackboard_repairs_total"
    )
    assert total == len(items) >= 2
    await ws.close()


async def test_budget_ops_are_counted_by_op_and_status(server: ServerProcess) -> None:
    await create_project(server, "film-money")  # budget_total 1000
    before = await scrape(server)
    ops = [
        {"op": "reserve", "amount": 100, "idempotency_key": "r1"},
        {"op": "charge", "amount": 5000, "idempotency_key": "c1"},  # more than there is
        {"op": "reserve", "amount": 100, "idempotency_key": "r1"},  # a replay
    ]
    statuses = []
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for body in ops:
            response = await http.post("/api/projects/film-money/budget/ops", json=body)
            statuses.append(response.status_code)
        bad = await http.post("/api/projects/film-money/budget/ops", json={"op": "reserve"})
        assert bad.status_code == 422  # refused before the ledger: not a ledger op
    assert statuses[1] == 409 and statuses[0] == statuses[2] and statuses[0] < 300
    after = await scrape(server)
    ok = str(statuses[0])
    assert delta(before, after, "blackboard_budget_ops_total", op="reserve", status=ok) == 2
    assert delta(before, after, "blackboard_budget_ops_total", op="charge", status="409") == 1
    assert delta(before, after, "blackboard_budget_op_seconds_count", op="reserve") == 2
    assert delta(before, after, "blackboard_budget_op_seconds_count", op="charge") == 1
    assert delta(before, after, "blackboard_budget_op_seconds_sum", op="charge") > 0
