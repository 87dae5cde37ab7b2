"""Debian's Chromium, headless, driven by Playwright (which downloads no browser of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from support.binaries import CHROMIUM, require_module, require_program

__all__ = ["CHROMIUM_ARGS", "PageOpener", "chromium"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A Playwright ``Browser``, closed when the block ends (skips or fails when missing)."""
    require_program("chromium", "chromium", path=CHROMIUM)
    require_module("playwright.async_api", "playwright")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class PageOpener:
    """Opens pages in a browser that outlives the test, and closes every one of them at its end.

    Each page has a browser context of its own (Playwright's ``Browser.new_page``): no cookies,
    storage or cache pass from one test to the next, and no page left open keeps reconnecting
    to a server that is gone.
    """

    def __init__(self, browser: Any) -> None:
        self._browser = browser
        self._pages: list[Any] = []

    async def new_page(self, **options: Any) -> Any:
        page = await self._browser.new_page(**options)
        self._pages.append(page)
        return page

    async def close(self) -> None:
        for page in self._pages:
            await page.close()  # also closes the page's own context
        self._pages.clear()
