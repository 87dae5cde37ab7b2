"""The demo page streams only what is in view once the user zooms in, in Debian's Chromium.

The page opens at street level (zoom 15) over tiles from a loopback tile server; positions reach
it through the real broker and stream. Until the user moves the map it receives every vehicle;
after a drag it reconnects with ``bbox`` (the view, padded), and further drags move the box with
subscribe messages. Vehicles that leave the view are dropped from the table and the map.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support.kafka import produce
from support.status import wait_ready, wait_stats

from siscom.dev.simulator import QUERETARO

# The module shares one Chromium (tests/integration/conftest.py): its tests run in its loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ROWS = "#devices tbody tr"
MARKERS = "#map .leaflet-marker-icon.marker[data-device-id]"


def position(device: str, lat: float, lon: float) -> bytes:
    data = {
        "DEVICE_ID": device,
        "LATITUD": f"{lat:+.6f}",
        "LONGITUD": f"{lon:+.6f}",
        "SPEED": "30.00",
        "HEADING": "0",
        "GPS_DATETIME": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    return json.dumps({"data": data}).encode()


async def until(condition, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.1)


async def rows(page: Any) -> list[str]:
    return sorted(await page.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.deviceId)"))


async def drag(page: Any, dx: float) -> None:
    box = await page.locator("#map").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + dx, y, steps=8)
    await page.mouse.up()


async def test_zoomed_in_the_page_subscribes_by_bbox_and_drops_vehicles_that_leave_the_view(
    make_server, broker, topic, tiles, browser
):
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template)
    await wait_ready(server)
    lat, lon = QUERETARO
    await produce(broker.bootstrap, topic, [position("near", lat, lon), position("far", lat, lon + 0.3)])
    await wait_stats(server, lambda s: s["records"] >= 2)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    sockets: list[Any] = []
    sent: list[str] = []

    def on_socket(socket: Any) -> None:
        sockets.append(socket)
        socket.on("framesent", lambda payload: sent.append(payload))

    page.on("websocket", on_socket)
    await page.goto(f"{server.url}/?lat={lat}&lon={lon}&zoom=15")

    async def both_listed() -> bool:
        return await rows(page) == ["far", "near"]

    await until(both_listed)  # not moved by the user yet: every vehicle
    assert parse_qs(urlsplit(sockets[0].url).query) == {}

    await drag(page, -200)  # the user pans east a little: the page narrows its stream to the view

    async def only_near() -> bool:
        return len(sockets) == 2 and await rows(page) == ["near"]

    await until(only_near)
    west, south, east, north = map(float, parse_qs(urlsplit(sockets[1].url).query)["bbox"][0].split(","))
    assert west < lon < east and south < lat < north and east < lon + 0.3
    assert east - west < 0.2  # street level: a small box

    await produce(broker.bootstrap, topic, [position("near", lat, lon + 0.3), position("new", lat + 0.001, lon)])

    async def near_left_new_came() -> bool:
        return await rows(page) == ["new"] and await page.locator(MARKERS).count() == 1

    await until(near_left_new_came)

    await drag(page, 150)  # panning again moves the box on the same connection

    async def subscribed() -> bool:
        return any('"subscribe"' in str(payload) for payload in sent)

    await until(subscribed)
    message = json.loads(next(str(p) for p in sent if '"subscribe"' in str(p)))
    assert message["action"] == "subscribe" and len(message["bbox"]) == 4
    assert message["bbox"][0] < west  # the view moved west
    assert len(sockets) == 2
    await page.close()
