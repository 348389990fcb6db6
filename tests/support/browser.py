"""Headless Chromium (Debian's `chromium` + `chromedriver`, see `make browser`) driven by
Selenium, with an async face: every driver call runs in a worker thread, so the event
loop keeps serving the Python clients a test runs beside the page."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
DESKTOP = (1280, 800)
PHONE = (390, 844)
# An async script: calls back on the second animation frame, after the next paint.
PAINTED = (
    "const done = arguments[arguments.length - 1];"
    " requestAnimationFrame(() => requestAnimationFrame(() => done()));"
)
T = TypeVar("T")


def new_driver() -> webdriver.Chrome:
    options = Options()
    options.binary_location = CHROMIUM  # both paths given: Selenium Manager never runs
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    @classmethod
    async def start(cls) -> Browser:
        browser = cls(await asyncio.to_thread(new_driver))
        await browser.viewport(*DESKTOP)
        return browser

    async def run(self, action: Callable[[webdriver.Chrome], T]) -> T:
        return await asyncio.to_thread(action, self.driver)

    async def open(self, url: str) -> None:
        await self.run(lambda d: d.get(url))

    async def script(self, source: str, *args: Any) -> Any:
        return await self.run(lambda d: d.execute_script(source, *args))

    async def painted(self) -> None:
        """Wait until a frame laid out and painted now is on screen: the second animation
        frame from here comes after it (bounded by the driver's script timeout)."""
        await self.run(lambda d: d.execute_async_script(PAINTED))

    async def until(self, condition: Callable[[webdriver.Chrome], T], timeout: float = 10.0) -> T:
        """The first truthy value of `condition`, polled every 20 ms; TimeoutException
        past `timeout`."""
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.02)
        return await asyncio.to_thread(wait.until, condition)

    async def find(self, css: str, timeout: float = 10.0) -> WebElement:
        return await self.until(lambda d: _displayed(d, css), timeout)

    async def live(self, timeout: float = 15.0) -> None:
        """Wait until the page has synced the document over its socket."""
        await self.until(
            lambda d: (
                d.find_element("id", "connection").get_attribute("data-connection") == "connected"
            ),
            timeout,
        )

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        await self.run(lambda d: d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics))

    async def screenshot(self, name: str, width: int, height: int, *, mobile: bool) -> Path:
        """`name.png` (the screen a person sees) and `name-full.png` (the whole page)."""
        SCREENSHOTS.mkdir(exist_ok=True)
        await self.viewport(width, height, mobile=mobile)
        await self.painted()  # one layout and paint at the new size
        path = SCREENSHOTS / f"{name}.png"
        await self.run(lambda d: d.save_screenshot(str(path)))
        full = await self.script("return document.documentElement.scrollHeight")
        await self.viewport(width, max(height, int(full)), mobile=mobile)
        await self.painted()
        await self.run(lambda d: d.save_screenshot(str(SCREENSHOTS / f"{name}-full.png")))
        await self.viewport(*DESKTOP)
        return path

    async def script_errors(self) -> list[str]:
        """Uncaught errors the page's scripts threw since the last call."""
        entries = await self.run(lambda d: d.get_log("browser"))
        return [entry["message"] for entry in entries if entry.get("source") == "javascript"]

    async def close(self) -> None:
        await asyncio.to_thread(self.driver.quit)


def _displayed(driver: webdriver.Chrome, css: str) -> WebElement | None:
    found = driver.find_elements("css selector", css)
    return found[0] if found and found[0].is_displayed() else None
