"""Fixtures of the integration tests that drive a browser: Chromium, and a tile server.

Starting Chromium takes seconds, so a module that drives one shares one: its tests run in the
module's event loop (``pytestmark = pytest.mark.asyncio(loop_scope="module")``, where the
browser lives) and each gets pages of its own, closed when it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from support.browser import PageOpener, chromium
from support.tiles import TileServer, serve_tiles


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_chromium() -> AsyncIterator[Any]:
    """One headless Chromium for the tests of a module."""
    async with chromium() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def browser(module_chromium: Any) -> AsyncIterator[PageOpener]:
    """``await browser.new_page(...)``: pages in the module's Chromium, closed after the test."""
    opener = PageOpener(module_chromium)
    yield opener
    await opener.close()


@pytest.fixture
def tiles() -> Iterator[TileServer]:
    """A map tile server on loopback, for pages that must load no tile from the internet."""
    with serve_tiles() as server:
        yield server
