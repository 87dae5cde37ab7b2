"""The stream and the demo page in a real browser: Debian's Chromium, driven by Playwright.

No browser is downloaded: Playwright drives the system's ``chromium`` through
``executable_path``. The JavaScript clients are the product brief's snippets, run unchanged but
for the brief's ``localhost:8000``, which becomes the test server's address; and run again with
``new EventSource(...)`` in place of ``new WebSocket(...)``, the stream over Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.browser import chromium
from support.kafka import produce
from support.status import wait_ready, wait_stats

from siscom.dev.simulator import device_ids, run_simulator

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
SNIPPETS = (ALL_EVENTS, FILTERED, FULL_CLIENT)


def with_event_source(snippet: str) -> str:
    """The snippet with ``new EventSource(`` in place of ``new WebSocket(``. An absolute URL's
    scheme changes with it (``EventSource`` fetches over HTTP: ``ws://`` becomes ``http://``);
    nothing else does. The handlers stay as written: ``EventSource`` has ``onopen``,
    ``onmessage`` and ``onerror`` but no close event, so the brief's ``onclose`` is never called;
    its ``onerror`` (which calls ``close()``) is what runs when the stream ends."""
    return snippet.replace("new WebSocket('ws://", "new EventSource('http://").replace(
        'new WebSocket("', 'new EventSource("'
    )


EVENT_SOURCE_SNIPPETS = tuple(with_event_source(snippet) for snippet in SNIPPETS)


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

    async def wait_line(self, start: str, timeout: float = 10.0) -> str:
        """The first line logged that starts with ``start`` (waiting for it)."""
        async with asyncio.timeout(timeout):
            while not (found := [line for line in self.lines if line.startswith(start)]):
                await asyncio.sleep(0.05)
        return found[0]

    async def wait_frames(self, count: int, timeout: float = 10.0) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count or self._pending:
                await asyncio.sleep(0.05)
        return self.frames


async def run_snippet(browser: Any, server: Any, snippet: str) -> tuple[Any, Console]:
    """A new page of the server's origin running ``snippet`` (the brief's ``localhost:8000`` made
    the server's address), and what it logs."""
    page = await browser.new_page()
    console = Console(page)
    # A document of the server's origin, so the relative URL of the last snippet resolves; the
    # snippet runs in it as typed into the browser's console (the page's Content Security Policy
    # forbids inline scripts, but not its own connections to the server).
    await page.goto(f"{server.url}/health")
    devtools = await page.context.new_cdp_session(page)
    expression = snippet.replace("localhost:8000", f"{server.host}:{server.port}")
    result = await devtools.send("Runtime.evaluate", {"expression": expression})
    assert "exceptionDetails" not in result, result
    return page, console


def record(device_id: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}, "uuid": f"{device_id}-{seq}"}).encode()


async def test_the_briefs_javascript_clients_receive_their_devices_frames(make_server, broker, topic, browser):
    server = make_server()
    await wait_ready(server)
    everything, filtered, one = [(await run_snippet(browser, server, snippet))[1] for snippet in SNIPPETS]
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


def test_the_event_source_snippets_differ_from_the_briefs_only_in_the_constructor_and_scheme():
    """Guards the substitution: a snippet left on WebSocket would make the SSE test below
    a second WebSocket test."""
    for brief, changed in zip(SNIPPETS, EVENT_SOURCE_SNIPPETS):
        assert "WebSocket(" not in changed.replace("new EventSource(", "")
        assert (
            changed.replace("new EventSource('http://", "new WebSocket('ws://").replace(
                'new EventSource("', 'new WebSocket("'
            )
            == brief
        )


async def test_the_briefs_snippets_with_event_source_parse_the_same_frames_as_over_websocket(
    make_server, broker, topic, browser
):
    """The SSE issue's promise: ``new EventSource(url)`` in place of ``new WebSocket(url)`` and
    the brief's JavaScript works as written. Each snippet runs over both transports at once and
    ``JSON.parse(event.data)`` must give the same objects (cursor ids included). When the stream
    ends, the full client's ``onerror`` runs and its ``close()`` stops the browser's reconnecting
    (``onclose`` is never called: ``EventSource`` has no close event); the first snippet, with no
    error handler, keeps reconnecting on its own."""
    server = make_server()
    await wait_ready(server)
    pages = {
        "websocket": [await run_snippet(browser, server, snippet) for snippet in SNIPPETS],
        "sse": [await run_snippet(browser, server, snippet) for snippet in EVENT_SOURCE_SNIPPETS],
    }
    await wait_stats(server, lambda s: s["connections"] == 6)
    for opened in pages.values():
        await opened[2][1].wait_line("Conexión WebSocket abierta")

    devices = ["0848086072", "0848086073", "0848086074"]
    await produce(broker.bootstrap, topic, [record(devices[n % 3], n) for n in range(9)])
    for transport, opened in pages.items():
        for (_, console), wanted in zip(opened, (devices, devices[:2], devices[:1])):
            frames = await console.wait_frames(3 * len(wanted))
            assert {frame["event"] for frame in frames} == {"message"}, transport
            assert [f["data"]["data"]["SEQ"] for f in frames] == [n for n in range(9) if devices[n % 3] in wanted]
    await asyncio.sleep(0.3)  # nothing more arrives for the filtered clients
    for (_, websocket), (_, sse) in zip(pages["websocket"], pages["sse"]):
        assert sse.frames == websocket.frames
    assert [len(console.frames) for _, console in pages["sse"]] == [9, 6, 3]

    # The stream ends (the server stops): the handlers as written, over each transport.
    await asyncio.to_thread(server.stop)
    (_, websocket), (sse_page, sse) = pages["websocket"][2], pages["sse"][2]
    await websocket.wait_line("Conexión WebSocket cerrada")
    await sse.wait_line("Error en WebSocket:")
    assert await sse_page.evaluate("eventSource.readyState") == 2  # CLOSED by the handler's close()
    assert not [line for line in sse.lines if line.startswith("Conexión WebSocket cerrada")]
    all_events_page = pages["sse"][0][0]
    async with asyncio.timeout(10):  # CONNECTING: with no handler to close it, it retries on its own
        while await all_events_page.evaluate("ws.readyState") != 0:
            await asyncio.sleep(0.05)


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
        page.on(
            "response", lambda response: response.status >= 400 and failures.append(f"{response.status} {response.url}")
        )
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


COMPRESSED_CLIENT = """\
const ws = new WebSocket('ws://localhost:8000/api/v1/stream?device_ids=0848086075');
ws.onopen = () => {
  console.log('extensions: ' + ws.extensions);
  // Chromium compresses what it sends too, once compression is agreed.
  ws.send(JSON.stringify({action: 'subscribe', device_ids: ['0848086076'], note: 'x'.repeat(2000)}));
};
ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log('Mensaje recibido:', data);
};
"""


async def test_chromiums_own_compression_offer_is_agreed_and_its_frames_decode(make_server, broker, topic, browser):
    """Chromium always offers ``permessage-deflate; client_max_window_bits``; the gateway agrees
    it (compressing each frame once for all its clients) and Chromium decodes every frame, and
    what Chromium compresses the gateway reads."""
    server = make_server()
    await wait_ready(server)
    _, console = await run_snippet(browser, server, COMPRESSED_CLIENT)
    assert await console.wait_line("extensions: ") == "extensions: permessage-deflate"
    (ack,) = await console.wait_frames(1)
    assert ack["event"] == "ack" and ack["data"]["device_ids"] == ["0848086075", "0848086076"]
    await wait_stats(server, lambda s: s["connections"] == 1)
    fields = {f"SENSOR_{k}": k / 3 for k in range(40)}
    values = [
        json.dumps({"data": {"DEVICE_ID": device, "SEQ": n, **fields}, "uuid": f"{device}-{n}"}).encode()
        for n, device in enumerate(["0848086075", "0848086076"] * 5)
    ]
    await produce(broker.bootstrap, topic, values)
    frames = (await console.wait_frames(11))[1:]
    assert [frame["data"] for frame in frames] == [json.loads(value) for value in values]
