"""The dashboard (DESIGN.md section 11) in headless Chromium against real servers: live
both ways with Python clients, presence, the history scrubber, read-only tokens, the
disconnected state, and screenshots at desktop and phone sizes (tests/screenshots/)."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from pycrdt import Doc, Map
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from blackboard.sync.client import Session
from blackboard.web.ui_routes import STATIC_DIR
from tests.support.api import bearer, create_project, eventually
from tests.support.auth import start_auth_server, token
from tests.support.browser import DESKTOP, PHONE, Browser
from tests.support.js import JsClients
from tests.support.server import ServerProcess, StartServer

LIVE_WITHIN_S = 1.0


@pytest.fixture(autouse=True)
def built() -> None:
    assert (STATIC_DIR / "project.js").is_file(), "the dashboard is not built: run `make ui`"


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[], Awaitable[Browser]]]:
    """Start headless Chromium instances (each its own profile); all quit at the end."""
    started: list[Browser] = []

    async def start() -> Browser:
        started.append(await Browser.start())
        return started[-1]

    yield start
    try:
        for browser in started:
            assert await browser.script_errors() == []
    finally:
        await asyncio.gather(*(browser.close() for browser in started))


def card_title(driver: WebDriver, shot_id: str) -> str | None:
    cards = driver.find_elements("css selector", f'[data-shot-id="{shot_id}"] .card-title')
    return cards[0].text if cards else None


def shot_map(doc: Doc, shot_id: str) -> Map:
    return doc.get("shots", type=Map)[shot_id]


async def open_project(
    browser: Browser, server: ServerProcess, project_id: str, query: str = ""
) -> None:
    await browser.open(f"{server.http}/ui/projects/{project_id}{query}")
    await browser.live()


async def type_into(browser: Browser, css: str, text: str) -> None:
    field = await browser.find(css)
    await browser.run(lambda _: field.send_keys(Keys.CONTROL, "a"))
    await browser.run(lambda _: field.send_keys(text))


async def test_live_both_ways_with_a_python_client(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    await create_project(server, "film")
    doc = Doc()
    async with Session(server.ws, "film", doc) as agent:
        doc.get("shots", type=Map)["S1"] = Map({"title": "Harbour", "status": "draft"})
        await agent.flush()
        page = await browsers()
        await open_project(page, server, "film")
        assert await page.until(lambda d: card_title(d, "S1")) == "Harbour"
        # The card stays the same element, in the same place, through others' edits.
        before = await page.script(
            "const c = document.querySelector('[data-shot-id=\"S1\"]'); c.marker = 1;"
            "return c.getBoundingClientRect().toJSON()"
        )

        started = time.monotonic()
        doc.get("shots", type=Map)["S2"] = Map({"title": "Arrives live", "status": "review"})
        await page.until(lambda d: card_title(d, "S2") == "Arrives live", timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed < LIVE_WITHIN_S, f"a Python client's shot took {elapsed:.2f}s to show"
        # The Python client sets no awareness: the server's presence count shows it.
        await page.until(
            lambda d: "1 more connection" in d.find_element("id", "presence-extra").text
        )
        assert await page.script(
            "const c = document.querySelector('[data-shot-id=\"S1\"]');"
            "return [c.marker, c.getBoundingClientRect().toJSON()]"
        ) == [1, before]

        # A title typed in the page reaches the Python client.
        await page.run(lambda d: d.find_element("css selector", '[data-shot-id="S1"]').click())
        await type_into(page, "#edit-title", "Harbour at night")

        def agent_sees_title() -> None:
            assert shot_map(doc, "S1")["title"] == "Harbour at night"

        await eventually(agent_sees_title, timeout=5)
        # The Python client's edit while the drawer is open shows in the field and card.
        shot_map(doc, "S1")["notes"] = "shoot at 4am"
        await page.until(
            lambda d: d.find_element("id", "edit-notes").get_attribute("value") == "shoot at 4am"
        )
        await page.run(lambda d: d.find_element("id", "edit-status").send_keys("approved"))

        def agent_sees_status() -> None:
            assert shot_map(doc, "S1")["status"] == "approved"

        await eventually(agent_sees_status, timeout=5)
        await page.until(
            lambda d: d.find_elements(
                "css selector", '.column[data-status="approved"] [data-shot-id="S1"]'
            )
        )


async def test_two_pages_see_each_others_presence_and_agents(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]], js: JsClients
) -> None:
    await create_project(server, "film")
    first, second = await browsers(), await browsers()
    await open_project(first, server, "film")
    await open_project(second, server, "film")
    names = [
        await b.run(lambda d: d.find_element("id", "name").get_attribute("value"))
        for b in (first, second)
    ]
    assert names[0] != names[1]

    def present(driver: WebDriver) -> set[str]:
        found = driver.find_elements("css selector", "[data-presence]")
        return {entry.get_attribute("data-presence") for entry in found}

    for browser in (first, second):
        await browser.until(lambda d: present(d) == set(names))
    # A new name travels too, and a page that leaves is gone from the other.
    await type_into(second, "#name", "Director Kim\n")
    await first.until(lambda d: present(d) == {names[0], "Director Kim"})
    await second.open("about:blank")
    await first.until(lambda d: present(d) == {names[0]})

    # An agent on a stock client that sets its awareness shows as an agent.
    await js.connect("bot", server.ws, "film")
    await js.call(
        "setAwareness", name="bot", state={"user": {"name": "render-bot", "kind": "agent"}}
    )
    await first.until(lambda d: present(d) == {names[0], "render-bot"})
    entry = await first.find('[data-presence="render-bot"]')
    assert entry.get_attribute("data-kind") == "agent"


async def test_scrubber_shows_an_older_title_read_only(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    await create_project(server, "film")
    doc = Doc()
    async with Session(server.ws, "film", doc) as agent:
        doc.get("shots", type=Map)["S1"] = Map({"title": "First cut", "status": "draft"})
        await agent.flush()
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            old_seq = (await http.get("/api/projects/film")).json()["seq"]
        shot_map(doc, "S1")["title"] = "Final cut"
        await agent.flush()
    page = await browsers()
    await open_project(page, server, "film")
    await page.until(lambda d: card_title(d, "S1") == "Final cut")
    await page.until(lambda d: int(d.find_element("id", "scrubber").get_attribute("max")) > old_seq)

    await page.script(
        "const s = document.getElementById('scrubber'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input'))",
        old_seq,
    )
    await page.until(lambda d: card_title(d, "S1") == "First cut")
    assert await page.run(lambda d: d.find_element("id", "history-bar").is_displayed())
    await page.screenshot("project-history", *DESKTOP, mobile=False)
    assert f"seq {old_seq}" in await page.run(lambda d: d.find_element("id", "history-label").text)
    await page.run(lambda d: d.find_element("css selector", '[data-shot-id="S1"]').click())
    assert not await page.run(lambda d: d.find_element("id", "edit-title").is_enabled())
    await page.run(lambda d: d.find_element("id", "edit-close").click())

    await page.run(lambda d: d.find_element("id", "history-bar-live").click())
    await page.until(lambda d: card_title(d, "S1") == "Final cut")
    assert not await page.run(lambda d: d.find_element("id", "history-bar").is_displayed())


async def test_tokens_read_page_refuses_edits_write_page_edits(
    start_server: StartServer, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        # The shells and assets hold no data and need no token; the data does.
        assert (await http.get("/ui/projects/film")).status_code == 200
        assert (await http.get("/ui/assets/project.js")).status_code == 200
        assert (await http.get("/api/projects/film")).status_code == 401
    doc = Doc()
    writer = token("film", "write", "agent-7")
    async with Session(server.ws, "film", doc, token=writer) as agent:
        doc.get("shots", type=Map)["S1"] = Map({"title": "Locked", "status": "draft"})
        await agent.flush()

        page = await browsers()
        await open_project(page, server, "film", f"?token={token('film', 'read', 'rita')}")
        assert "token=" not in await page.run(lambda d: d.current_url)  # kept, not shown
        await page.until(lambda d: card_title(d, "S1") == "Locked")
        notice = await page.find("[data-readonly]")
        assert "rita" in notice.text and "read" in notice.text
        await page.screenshot("project-read-only", *DESKTOP, mobile=False)
        assert not await page.run(lambda d: d.find_element("id", "new-shot").is_enabled())
        await page.run(lambda d: d.find_element("css selector", '[data-shot-id="S1"]').click())
        for field in ("edit-title", "edit-status", "edit-assignee", "edit-notes"):
            assert not await page.run(lambda d, f=field: d.find_element("id", f).is_enabled())

        # The token is kept for the tab's session: a reload without it is still let in.
        await open_project(page, server, "film")
        await page.find("[data-readonly]")

        # A write token given later replaces it, and its edits go through.
        await open_project(page, server, "film", f"?token={token('film', 'write', 'wes')}")
        assert not await page.run(lambda d: d.find_element("id", "readonly").is_displayed())
        await page.run(lambda d: d.find_element("css selector", '[data-shot-id="S1"]').click())
        await type_into(page, "#edit-title", "Unlocked")

        def agent_sees_title() -> None:
            assert shot_map(doc, "S1")["title"] == "Unlocked"

        await eventually(agent_sees_title, timeout=5)


async def test_a_refused_token_asks_for_another(
    start_server: StartServer, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin)
    page = await browsers()
    await page.open(f"{server.http}/ui/projects/film?token={token('film', 'read', 'x', ttl_s=0)}")
    gate = await page.find("#gate")
    assert "expired" in gate.text
    await page.open(f"{server.http}/ui/projects/film?token={token('other', 'read', 'x')}")
    problem = await page.find("#problem")
    assert "the token is for project 'other'" in problem.text


async def test_the_project_list_and_a_project_token(
    start_server: StartServer, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    server, admin = await start_auth_server(start_server)
    await create_project(server, "film", token=admin, title="The Film", budget_total=500)
    await create_project(server, "short", token=admin, title="A Short")
    page = await browsers()
    await page.open(f"{server.http}/ui/?token={token('*', 'read', 'producer')}")
    card = await page.find('[data-project-id="film"]')
    await page.until(lambda d: "$500" in card.text and "nobody" in card.text)
    assert "The Film" in card.text
    assert "A Short" in (await page.find('[data-project-id="short"]')).text
    # A token for one project cannot list them all: the list opens that project instead.
    await page.open(f"{server.http}/ui/?token={token('film', 'read', 'rita')}")
    await page.until(lambda d: d.current_url.endswith("/ui/projects/film"))
    await page.live()


async def test_a_status_moved_back_is_put_back_and_listed(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    await create_project(server, "film")
    doc = Doc()
    async with Session(server.ws, "film", doc) as agent:
        doc.get("shots", type=Map)["S1"] = Map({"title": "Storm", "status": "review"})
        await agent.flush()
    page = await browsers()
    await open_project(page, server, "film")
    await page.run(lambda d: d.find_element("css selector", '[data-shot-id="S1"]').click())
    await page.run(lambda d: d.find_element("id", "edit-status").send_keys("draft"))
    correction = await page.find(".correction")
    assert "shots/S1/status" in correction.text and "lattice" in correction.text
    await page.until(
        lambda d: d.find_element("id", "edit-status").get_attribute("value") == "review"
    )
    assert await page.run(
        lambda d: d.find_elements(
            "css selector", '.column[data-status="review"] [data-shot-id="S1"]'
        )
    )


async def test_disconnected_then_back(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    await create_project(server, "film")
    page = await browsers()
    await open_project(page, server, "film")
    await server.kill()
    banner = await page.find("#offline", timeout=15)
    assert "retrying" in banner.text
    await page.screenshot("project-offline", *PHONE, mobile=True)
    state = await page.run(
        lambda d: d.find_element("id", "connection").get_attribute("data-connection")
    )
    assert state == "retrying"
    await server.restart()
    await page.live(timeout=30)
    assert not await page.run(lambda d: d.find_element("id", "offline").is_displayed())


async def seed_film(server: ServerProcess) -> None:
    """A project with something in every section, for looking at."""
    await create_project(server, "nightfall", title="Nightfall", budget_total=25000)
    doc = Doc()
    async with Session(server.ws, "nightfall", doc) as agent:
        spec = doc.get("spec", type=Map)
        spec["title"] = "Nightfall"
        spec["logline"] = "A lighthouse keeper finds the sea has stopped."
        shots = doc.get("shots", type=Map)
        for order, (shot_id, title, scene, duration, status, assignee) in enumerate(
            [
                ("S01", "Lighthouse at dusk", "1", 4.0, "approved", "ana"),
                ("S02", "Keeper climbs the stairs", "1", 6.5, "review", "gen-agent-2"),
                ("S03", "The still sea", "2", 3.0, "generating", "gen-agent-1"),
                ("S04", "Gull frozen mid-air", "2", 2.5, "planned", None),
                ("S05", "Radio static", "3", 5.0, "draft", None),
                ("S06", "Boat on glass water", "3", 4.0, "rejected", "ana"),
                ("S07", "Dawn that never comes", "4", 8.0, "draft", None),
            ],
            start=1,
        ):
            shots[shot_id] = Map(
                {"title": title, "scene": scene, "duration_s": duration, "status": status}
            )
            shots[shot_id]["order"] = order
            if assignee:
                shots[shot_id]["assignee"] = assignee
        artifacts = doc.get("artifacts", type=Map)
        artifacts["A1"] = Map({"shot_id": "S01", "content_type": "image/png", "key": "a1"})
        artifacts["A2"] = Map({"shot_id": "S02", "content_type": "video/mp4", "key": "a2"})
        dna = doc.get("dna_bank", type=Map)
        dna["mara"] = Map(
            {"name": "Mara Quell", "description": "The keeper. Sixties, weathered.", "version": 3}
        )
        dna["mara"]["traits"] = Map({"hair": "grey braid", "coat": "oilskin"})
        dna["gull"] = Map({"name": "The Gull", "description": "Still in the air.", "version": 1})
        tasks = doc.get("tasks", type=Map)
        for task_id, kind, shot_id, status, attempt in [
            ("T1", "image", "S03", "pending", 1),
            ("T2", "video", "S02", "done", 2),
            ("T3", "image", "S04", "pending", 1),
            ("T4", "upscale", "S06", "failed", 1),
        ]:
            tasks[task_id] = Map(
                {"kind": kind, "shot_id": shot_id, "status": status, "attempt": attempt}
            )
        shots["S05"]["duration_s"] = "7"  # repaired by the server: a correction to list
        await agent.flush()
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=bearer(None)) as http:
        base = "/api/projects/nightfall"
        for key, (path, body) in enumerate(
            [
                ("/tasks/T1/lease", {"action": "claim", "holder": "gen-agent-1", "ttl_s": 90}),
                ("/budget/ops", {"op": "reserve", "amount": 4000}),
                ("/budget/ops", {"op": "charge", "amount": 9000}),
            ]
        ):
            response = await http.post(base + path, json={**body, "idempotency_key": f"k{key}"})
            assert response.status_code == 200, response.text


async def test_screenshots_and_the_project_list(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    await seed_film(server)
    page, other = await browsers(), await browsers()
    await open_project(other, server, "nightfall")
    await open_project(page, server, "nightfall")
    await page.until(lambda d: len(d.find_elements("css selector", "[data-presence]")) == 2)
    await page.until(lambda d: d.find_elements("css selector", ".correction"))

    meter = await page.find("[data-budget-available]")
    assert meter.get_attribute("data-budget-available") == "12000"
    assert "$12,000" in meter.text
    lease = await page.find("[data-expires]")
    assert lease.text.startswith("in ")
    correction = await page.find(".correction")
    assert "shots/S05/duration_s" in correction.text and "wrong_type" in correction.text
    # An artifact that cannot be fetched shows as a tile, not a broken image.
    await page.find('[data-shot-id="S01"] .thumb-missing')

    for name, size, mobile in [("desktop", DESKTOP, False), ("phone", PHONE, True)]:
        path = await page.screenshot(f"project-{name}", *size, mobile=mobile)
        assert path.stat().st_size > 10_000
    await page.run(lambda d: d.find_element("css selector", '[data-shot-id="S02"]').click())
    await page.screenshot("shot-editor", *DESKTOP, mobile=False)
    await page.screenshot("shot-editor-phone", *PHONE, mobile=True)

    await page.open(f"{server.http}/ui/")
    card = await page.find('[data-project-id="nightfall"]')
    await page.until(lambda d: "$12,000" in card.text and "1 person" in card.text)
    assert "Nightfall" in card.text and "seq " in card.text
    await page.screenshot("project-list", *DESKTOP, mobile=False)


def tiny_png(width: int, height: int) -> bytes:
    """A real PNG (solid colour), made here so the test needs no image file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\x4f\x46\xe5" * width  # filter byte, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


async def test_an_uploaded_image_shows_as_its_shots_thumbnail(
    server: ServerProcess, browsers: Callable[[], Awaitable[Browser]]
) -> None:
    await create_project(server, "film")
    doc = Doc()
    async with Session(server.ws, "film", doc) as agent:
        doc.get("shots", type=Map)["S1"] = Map({"title": "Harbour", "status": "review"})
        await agent.flush()
    page = await browsers()
    await open_project(page, server, "film")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        reply = await http.put(
            "/api/projects/film/artifacts/frame-1?shot_id=S1",
            content=tiny_png(32, 18),
            headers={"content-type": "image/png"},
        )
        assert reply.status_code == 201, reply.text
    # The artifact entry arrives live, and the browser loads the image through the API.
    size = await page.until(
        lambda d: d.execute_script(
            "const i = document.querySelector('[data-shot-id=\"S1\"] img.thumb');"
            "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null"
        )
    )
    assert size == [32, 18]
