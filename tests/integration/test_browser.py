"""The stream and the demo page in a real browser: Debian's Chromium, driven by Playwright.

No browser is downloaded: Playwright drives the system's ``chromium`` through
``executable_path``. The JavaScript clients are the product brief's snippets, run unchanged but
for the brief's ``localhost:8000``, which becomes the test server's address.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from siscom.dev.simulator import device_ids, run_simulator
from support.browser import chromium
from support.kafka import produce
from support.status import wait_ready, wait_stats

pytestmark = pytest.mark.browser

# The product brief's client snippets, verbatim (only the host:port of the first two changes).
ALL_EVENTS = """\
const ws = new WebSocket('ws://localhost:8000/api/v1/stream');
ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    console.log('Mensaje recibido:', data);
};
"""
FILTERED = """\
const ws = new WebSocket('ws://localhost:8000/api/v1/stream?device_ids=0848086072,0848086073');
ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    console.log('Mensaje recibido:', data);
};
"""
FULL_CLIENT = """\
const eventSource = new WebSocket("/api/v1/stream?device_ids=0848086072");

eventSource.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log("Evento recibido:", data);
};

eventSource.onopen = (event) => {
  console.log("Conexión WebSocket abierta");
};

eventSource.onerror = (error) => {
  console.error("Error en WebSocket:", error);
  eventSource.close();
};

eventSource.onclose = (event) => {
  console.log("Conexión WebSocket cerrada");
};
"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as browser:
        yield browser


class Console:
    """What a page logged: the received frames, as the snippets print them, and the rest."""

    def __init__(self, page: Any) -> None:
        self.frames: list[dict] = []
        self.lines: list[str] = []
        self._pending: set[asyncio.Task[None]] = set()
        page.on("console", self._on_message)

    def _on_message(self, message: Any) -> None:
        self.lines.append(message.text)
        if message.text.startswith(("Mensaje recibido:", "Evento recibido:")) and len(message.args) == 2:
            task = asyncio.ensure_future(self._keep(message.args[1]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _keep(self, handle: Any) -> None:
        self.frames.append(await handle.json_value())

    async def wait_line(self, text: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.lines:
                await asyncio.sleep(0.05)

    async def wait_frames(self, count: int, timeout: float = 10.0) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count or self._pending:
                await asyncio.sleep(0.05)
        return self.frames


def record(device_id: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}, "uuid": f"{device_id}-{seq}"}).encode()


async def test_the_briefs_javascript_clients_receive_their_devices_frames(make_server, broker, topic, browser):
    server = make_server()
    await wait_ready(server)
    address = f"{server.host}:{server.port}"
    consoles = []
    for snippet in (ALL_EVENTS, FILTERED, FULL_CLIENT):
        page = await browser.new_page()
        consoles.append(Console(page))
        # A document of the server's origin, so the relative URL of the last snippet resolves;
        # the snippet runs in it as typed into the browser's console (the page's Content
        # Security Policy forbids inline scripts, but not its own WebSocket connections).
        await page.goto(f"{server.url}/health")
        devtools = await page.context.new_cdp_session(page)
        result = await devtools.send("Runtime.evaluate", {"expression": snippet.replace("localhost:8000", address)})
        assert "exceptionDetails" not in result, result
    everything, filtered, one = consoles
    await wait_stats(server, lambda s: s["connections"] == 3)
    await one.wait_line("Conexión WebSocket abierta")

    devices = ["0848086072", "0848086073", "0848086074"]
    await produce(broker.bootstrap, topic, [record(devices[n % 3], n) for n in range(9)])
    for console, wanted in ((everything, devices), (filtered, devices[:2]), (one, devices[:1])):
        frames = await console.wait_frames(3 * len(wanted))
        assert {frame["event"] for frame in frames} == {"message"}
        assert [f["data"]["data"]["SEQ"] for f in frames] == [n for n in range(9) if devices[n % 3] in wanted]
    await asyncio.sleep(0.3)  # nothing more arrives for the filtered clients
    assert (len(everything.frames), len(filtered.frames), len(one.frames)) == (9, 6, 3)


async def test_with_tiles_off_the_demo_page_draws_the_vehicles_on_a_grid_from_this_server_alone(
    make_server, broker, topic, browser
):
    """With STREAM_MAP_TILE_URL=off the page needs nothing but this server: a site without Internet."""
    server = make_server(STREAM_MAP_TILE_URL="off")
    await wait_ready(server)
    fleet = device_ids(12)
    stop = asyncio.Event()
    simulator = asyncio.create_task(run_simulator(broker.bootstrap, topic, devices=len(fleet), rate=60, stop=stop))
    try:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        console = Console(page)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        failures: list[str] = []
        page.on("response", lambda response: response.status >= 400 and failures.append(f"{response.status} {response.url}"))
        await page.goto(f"{server.url}/")
        markers = page.locator("#map svg g.marker[data-device-id]")
        async with asyncio.timeout(15):
            while await markers.count() < len(fleet):
                await asyncio.sleep(0.1)
        assert sorted(await markers.evaluate_all("els => els.map(e => e.dataset.deviceId)")) == fleet
        assert await page.locator("#map .leaflet-tile").count() == 0
        # Markers sit inside the map, and the device list has a row per vehicle.
        box = await page.locator("#map").bounding_box()
        for marker in await markers.all():
            inside = await marker.bounding_box()
            assert box["x"] <= inside["x"] <= box["x"] + box["width"]
            assert box["y"] <= inside["y"] <= box["y"] + box["height"]
        assert await page.locator("#devices tbody tr").count() == len(fleet)

        # The filter box reconnects with device_ids: only that vehicle is left.
        await page.fill("#device-ids", fleet[3])
        await page.click("#filter button")
        async with asyncio.timeout(10):
            while await markers.count() != 1:
                await asyncio.sleep(0.1)
        assert await markers.get_attribute("data-device-id") == fleet[3]
        await wait_stats(server, lambda s: s["connections"] == 1)
        assert not [line for line in console.lines if "rror" in line], console.lines
        assert failures == []
        assert [url for url in requests if not url.startswith((f"{server.url}/", "data:"))] == []
    finally:
        stop.set()
        await asyncio.wait_for(simulator, 10)
