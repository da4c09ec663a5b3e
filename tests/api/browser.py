"""A real headless Chromium for the console's tests: Debian's `chromium` (Playwright's own
browser download needs the internet), driven by Playwright for Python.

The browser is `CHROMIUM_PATH` (default `/usr/bin/chromium`); screenshots go to `ARTIFACTS_DIR`
(default `test-artifacts/`), and with `UPDATE_DOCS_SCREENSHOTS=1` the README's into `docs/` too.
Playwright is a dev dependency; under CI a missing browser fails the tests (.ci/run installs
it), elsewhere they skip and say why.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.conftest import ROOT, in_ci

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "test-artifacts")
DOCS = ROOT / "docs"
WAIT_MS = 10_000


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The browser, closed after; a skip (or under CI a failure) when it is missing."""
    why = missing()
    if why is not None:
        if in_ci():
            pytest.fail(f"{why}; CI runs the console in a browser")
        pytest.skip(why)
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Browsing:
    """One browser context (its own session storage), and what its pages requested and said.
    Leaving it asserts that no page threw or logged an error."""

    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    @classmethod
    @asynccontextmanager
    async def context_of(cls, browser: Browser) -> AsyncIterator[Browsing]:
        context = await browser.new_context(viewport={"width": 1100, "height": 900})
        context.set_default_timeout(WAIT_MS)
        found = cls(context)
        try:
            yield found
        finally:
            await context.close()
        assert found.errors == [], found.errors

    async def open(self, url: str, *, viewport: ViewportSize | None = None) -> Page:
        page = await self.context.new_page()
        if viewport is not None:
            await page.set_viewport_size(viewport)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)
        page.on("request", lambda request: self.requests.append(request))
        await page.goto(url)
        return page

    def _console(self, message: Any) -> None:
        # A refused request is logged by the browser itself; anything else (a CSP refusal, a
        # script error, a warning of ours) is the console misbehaving.
        if message.type in ("error", "warning") and "Failed to load resource" not in message.text:
            self.errors.append(f"console {message.type}: {message.text}")

    def api_requests(self) -> list[Request]:
        return [r for r in self.requests if not urlsplit(r.url).path.startswith("/console")]


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


async def screenshot(page: Page, name: str, *, readme: bool = False) -> None:
    """A test artifact; with `readme`, one of the README's pictures, refreshed on request."""
    await page.screenshot(path=artifact(name), full_page=True)
    if readme and os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        await page.screenshot(path=DOCS / name, full_page=True)
