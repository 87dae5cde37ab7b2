"""Debian's Chromium, headless, driven by Playwright (which downloads no browser of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from support.binaries import CHROMIUM, require_module, require_program

__all__ = ["CHROMIUM_ARGS", "chromium"]

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
