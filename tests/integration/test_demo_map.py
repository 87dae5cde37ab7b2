"""The demo page on a real map: Leaflet over raster tiles, in Debian's Chromium.

The tiles come from a tile server this module runs on loopback (generated PNGs, every request
kept), so the tests see exactly which tiles the page asks for. Positions are produced to the test
broker and reach the page through the real stream; where a marker should be drawn is computed
here from the Web Mercator projection, independently of Leaflet.

``SISCOM_UPDATE_SCREENSHOT=1`` makes the screenshot test write the README's ``docs/demo.png``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from support.kafka import produce
from support.status import wait_ready, wait_stats
from support.tiles import TILE, serve_tiles

from siscom.dev.simulator import QUERETARO, device_ids, run_simulator
from siscom.security.headers import demo_page_policy

# The module shares one Chromium (tests/integration/conftest.py): its tests run in its loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "docs" / "demo.png"
VIEWPORT = {"width": 1280, "height": 800}
CENTER = QUERETARO
ZOOM = 14
MARKERS = "#map .leaflet-marker-icon.marker[data-device-id]"


# -- Web Mercator, as any slippy map draws it (EPSG:3857, 256-pixel tiles) --------------------------


def world_pixel(lat: float, lon: float, zoom: int) -> tuple[float, float]:
    """Where (lat, lon) lies on the whole world's map at `zoom`, in pixels from its top left."""
    size = TILE * 2**zoom
    x = (lon + 180.0) / 360.0 * size
    y = (1.0 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / math.pi) / 2.0 * size
    return x, y


def view_tiles(width: int, height: int, lat: float, lon: float, zoom: int) -> set[tuple[int, int, int]]:
    """The tiles that cover a `width` x `height` view centred on (lat, lon)."""
    cx, cy = world_pixel(lat, lon, zoom)
    left, top = math.floor(cx) - width / 2, math.floor(cy) - height / 2
    right, bottom = math.floor(cx) + width / 2, math.floor(cy) + height / 2
    xs = range(math.floor(left / TILE), math.ceil(right / TILE))
    ys = range(math.floor(top / TILE), math.ceil(bottom / TILE))
    return {(zoom, x, y) for x in xs for y in ys}


def js_round(value: float) -> int:
    return math.floor(value + 0.5)


def expected_pixel(map_box: dict, lat: float, lon: float) -> tuple[float, float]:
    """Where a vehicle at (lat, lon) belongs on the page, with the map at CENTER and ZOOM."""
    cx, cy = world_pixel(*CENTER, ZOOM)
    origin_x, origin_y = js_round(cx - map_box["width"] / 2), js_round(cy - map_box["height"] / 2)
    x, y = world_pixel(lat, lon, ZOOM)
    return map_box["x"] + x - origin_x, map_box["y"] + y - origin_y


# -- records and page helpers ------------------------------------------------------------------------


def position(device: str, lat: float, lon: float, *, heading: int = 0, speed: float = 30.0) -> bytes:
    data = {
        "DEVICE_ID": device,
        "LATITUD": f"{lat:+.6f}",
        "LONGITUD": f"{lon:+.6f}",
        "SPEED": f"{speed:.2f}",
        "HEADING": str(heading),
        "GPS_DATETIME": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    return json.dumps({"data": data, "uuid": f"{device}-{time.monotonic_ns()}"}).encode()


def alert(device: str, kind: str) -> bytes:
    data = {"DEVICE_ID": device, "ALERT": kind, "GPS_DATETIME": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    return json.dumps({"data": data, "uuid": f"{device}-alert-{time.monotonic_ns()}"}).encode()


class PageLog:
    """Console lines, failed requests and policy violations of a page: none is expected."""

    def __init__(self, page: Any) -> None:
        self.console: list[str] = []
        self.failed: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("requestfailed", self._on_failed)
        page.on(
            "response",
            lambda response: response.status >= 400 and self.failed.append(f"{response.status} {response.url}"),
        )

    def _on_failed(self, request: Any) -> None:
        # Leaflet cancels the downloads of tiles a new view no longer needs: not a failure.
        if not (request.resource_type == "image" and request.failure == "net::ERR_ABORTED"):
            self.failed.append(f"{request.failure} {request.url}")

    def problems(self) -> list[str]:
        return [line for line in self.console if line.startswith(("error", "warning"))] + self.failed


async def open_page(browser: Any, url: str) -> tuple[Any, PageLog]:
    page = await browser.new_page(viewport=VIEWPORT)
    log = PageLog(page)
    await page.goto(url)
    return page, log


async def until(condition, timeout: float = 15.0, interval: float = 0.1) -> None:
    """Wait until the async `condition()` is true."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(interval)


async def marker_count(page: Any) -> int:
    return await page.locator(MARKERS).count()


async def marker_centre(page: Any, device: str) -> tuple[float, float]:
    box = await page.locator(f'{MARKERS}[data-device-id="{device}"]').bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def arrow_angle(page: Any, device: str) -> float:
    """The angle the device's arrow is turned by, in degrees clockwise, from its computed style."""
    matrix = await page.locator(f'{MARKERS}[data-device-id="{device}"] .arrow').evaluate(
        "el => new DOMMatrix(getComputedStyle(el).transform)"
    )
    return math.degrees(math.atan2(matrix["b"], matrix["a"])) % 360


def fixed_view_url(server: Any, **query: str) -> str:
    params = {"lat": str(CENTER[0]), "lon": str(CENTER[1]), "zoom": str(ZOOM), **query}
    return f"{server.url}/?" + "&".join(f"{k}={v}" for k, v in params.items())


# -- tests ----------------------------------------------------------------------------------------------


async def test_the_page_asks_the_configured_server_for_exactly_the_tiles_of_its_first_view(make_server, tiles, browser):
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template)
    await wait_ready(server)
    page, log = await open_page(browser, fixed_view_url(server))
    size = await page.locator("#map").evaluate("el => ({width: el.clientWidth, height: el.clientHeight})")
    expected = view_tiles(size["width"], size["height"], *CENTER, ZOOM)
    assert len(expected) >= 12  # the view spans several tiles each way

    async def all_loaded() -> bool:
        return await page.locator("#map img.leaflet-tile-loaded").count() >= len(expected)

    await until(all_loaded)
    await asyncio.sleep(0.5)  # nothing more is asked for
    requested = tiles.tiles_requested()
    assert sorted(requested) == sorted(expected)  # each tile once, no other
    assert await page.locator("#map img.leaflet-tile-loaded").count() == len(expected)
    # The tiles carry their attribution, with the link OpenStreetMap's licence asks for.
    credit = page.locator(".leaflet-control-attribution a[href='https://www.openstreetmap.org/copyright']")
    assert await credit.text_content() == "OpenStreetMap"
    assert log.problems() == []


async def test_the_page_may_load_images_from_the_tile_server_and_no_other(make_server, tiles, browser):
    """The Content-Security-Policy names the configured tile origin in img-src, and only it."""
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template)
    await wait_ready(server)
    page, _ = await open_page(browser, fixed_view_url(server))
    response = await page.request.get(f"{server.url}/")
    policy = response.headers["content-security-policy"]
    assert policy == demo_page_policy(tiles.url_template)
    assert f"img-src 'self' data: {tiles.origin};" in policy
    with serve_tiles() as other:
        load_image = """url => new Promise(resolve => {
            document.addEventListener("securitypolicyviolation", e => resolve("blocked " + e.blockedURI), {once: true});
            const image = new Image();
            image.onload = () => resolve("loaded");
            image.src = url;
        })"""
        assert await page.evaluate(load_image, f"{tiles.origin}/tiles/3/1/2.png") == "loaded"
        other_tile = f"{other.origin}/tiles/3/1/2.png"
        assert await page.evaluate(load_image, other_tile) == f"blocked {other_tile}"
        assert other.requests == []


async def test_markers_sit_on_their_coordinates_turned_to_their_heading_and_stopped_ones_differ(
    make_server, broker, topic, tiles, browser
):
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template)
    await wait_ready(server)
    page, log = await open_page(browser, fixed_view_url(server))
    await wait_stats(server, lambda s: s["connections"] == 1)
    lat, lon = CENTER
    vehicles = {  # device: (lat, lon, heading, speed)
        "0000000001": (lat + 0.010, lon - 0.020, 90, 42.0),
        "0000000002": (lat - 0.006, lon + 0.015, 225, 18.5),
        "0000000003": (lat + 0.001, lon + 0.002, 0, 0.0),
    }
    await produce(
        broker.bootstrap,
        topic,
        [position(device, la, lo, heading=h, speed=s) for device, (la, lo, h, s) in vehicles.items()],
    )

    async def all_drawn() -> bool:
        return await marker_count(page) == len(vehicles)

    await until(all_drawn)
    await asyncio.sleep(0.2)  # the frame after the last record is drawn
    map_box = await page.locator("#map").bounding_box()
    for device, (la, lo, heading, speed) in vehicles.items():
        x, y = await marker_centre(page, device)
        want_x, want_y = expected_pixel(map_box, la, lo)
        assert abs(x - want_x) <= 2 and abs(y - want_y) <= 2, (device, (x, y), (want_x, want_y))
        marker = page.locator(f'{MARKERS}[data-device-id="{device}"]')
        if speed == 0:
            assert "stopped" in (await marker.get_attribute("class")).split()
            assert await marker.locator(".dot").is_visible()
            assert not await marker.locator(".arrow").is_visible()
        else:
            assert "stopped" not in (await marker.get_attribute("class")).split()
            assert abs(await arrow_angle(page, device) - heading) < 0.5

    # A vehicle that moves and turns follows its record, and leaves a trail behind it.
    moved = (lat + 0.004, lon - 0.012)
    await produce(broker.bootstrap, topic, [position("0000000001", *moved, heading=180, speed=50.0)])
    want_x, want_y = expected_pixel(map_box, *moved)

    async def has_moved() -> bool:
        x, y = await marker_centre(page, "0000000001")
        return abs(x - want_x) <= 2 and abs(y - want_y) <= 2

    await until(has_moved, timeout=10)
    await asyncio.sleep(0.2)
    assert abs(await arrow_angle(page, "0000000001") - 180) < 0.5
    trails = await page.locator("#map path.trail").evaluate_all("els => els.map(e => e.getAttribute('d'))")
    assert sorted(trail.count("L") for trail in trails) == [0, 0, 1]  # two points, from first to second position
    assert log.problems() == []


async def test_alerts_are_listed_and_flash_their_vehicle_and_the_filter_keeps_only_its_devices(
    make_server, broker, topic, alerts_topic, tiles, browser
):
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template, KAFKA_ALERTS_TOPIC=alerts_topic)
    await wait_ready(server)
    page, log = await open_page(browser, fixed_view_url(server))
    await wait_stats(server, lambda s: s["connections"] == 1)
    lat, lon = CENTER
    fleet = ["0000000011", "0000000012", "0000000013"]
    await produce(broker.bootstrap, topic, [position(d, lat + i * 0.004, lon + i * 0.004) for i, d in enumerate(fleet)])

    async def all_drawn() -> bool:
        return await marker_count(page) == len(fleet)

    await until(all_drawn)
    await produce(broker.bootstrap, alerts_topic, [alert(fleet[1], "HARSH_BRAKING")])
    item = page.locator("#alerts li").first
    await item.wait_for(timeout=10_000)
    assert fleet[1] in await item.text_content() and "HARSH_BRAKING" in await item.text_content()
    flashing = page.locator(f"{MARKERS}.flash")

    async def one_flashes() -> bool:
        return await flashing.count() == 1

    await until(one_flashes, timeout=5)
    assert await flashing.get_attribute("data-device-id") == fleet[1]

    # A click on the alert brings its vehicle to the middle of the map.
    await item.click()
    map_box = await page.locator("#map").bounding_box()
    middle = (map_box["x"] + map_box["width"] / 2, map_box["y"] + map_box["height"] / 2)

    async def centred() -> bool:
        x, y = await marker_centre(page, fleet[1])
        return abs(x - middle[0]) <= 2 and abs(y - middle[1]) <= 2

    await until(centred, timeout=5)

    # The filter reconnects with device_ids: one vehicle is left, and only its records arrive.
    await page.fill("#device-ids", fleet[2])
    await page.click("#filter button")

    async def only_the_filtered() -> bool:
        return await page.locator(MARKERS).evaluate_all("els => els.map(e => e.dataset.deviceId)") == [fleet[2]]

    await until(only_the_filtered, timeout=10)
    await wait_stats(server, lambda s: s["connections"] == 1)
    assert f"device_ids={fleet[2]}" in page.url
    before = await marker_centre(page, fleet[2])
    await produce(broker.bootstrap, topic, [position(fleet[0], lat, lon), position(fleet[2], lat - 0.003, lon)])

    # The map was panned by the click: where the marker goes follows from where it was.
    old_x, old_y = world_pixel(lat + 0.008, lon + 0.008, ZOOM)
    new_x, new_y = world_pixel(lat - 0.003, lon, ZOOM)
    want = (before[0] + new_x - old_x, before[1] + new_y - old_y)

    async def filtered_moved() -> bool:
        x, y = await marker_centre(page, fleet[2])
        return abs(x - want[0]) <= 2 and abs(y - want[1]) <= 2

    await until(filtered_moved, timeout=10)
    assert await marker_count(page) == 1
    assert await page.locator("#devices tbody tr").count() == 1
    assert log.problems() == []


async def test_past_three_hundred_vehicles_the_markers_are_clustered(make_server, broker, topic, tiles, browser):
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template)
    await wait_ready(server)
    page, log = await open_page(browser, fixed_view_url(server, zoom="12"))
    await wait_stats(server, lambda s: s["connections"] == 1)
    fleet = device_ids(320)
    lat, lon = CENTER
    spot = [(lat + (i % 20 - 10) * 0.002, lon + (i // 20 - 8) * 0.002) for i in range(len(fleet))]
    await produce(broker.bootstrap, topic, [position(d, *spot[i]) for i, d in enumerate(fleet[:300])])

    async def rows(count: int) -> bool:
        return await page.locator("#devices tbody tr").count() == count

    async def markers(count: int) -> bool:
        return await marker_count(page) == count

    await until(lambda: rows(300))
    await until(lambda: markers(300))  # up to 300, every vehicle has its own marker
    await asyncio.sleep(0.3)
    assert await page.locator("#map .marker-cluster").count() == 0

    await produce(broker.bootstrap, topic, [position(d, *spot[300 + i]) for i, d in enumerate(fleet[300:])])
    await until(lambda: rows(320))

    async def clustered() -> bool:
        return await page.locator("#map .marker-cluster").count() > 0

    await until(clustered, timeout=10)
    counts = await page.locator("#map .marker-cluster").evaluate_all("els => els.map(e => +e.textContent)")
    assert sum(counts) + await marker_count(page) == 320  # every vehicle is in a cluster or shown
    assert await marker_count(page) < 50
    assert log.problems() == []


async def test_the_page_fits_the_simulated_fleet_and_its_screenshot_can_be_regenerated(
    make_server, broker, topic, alerts_topic, tiles, browser, tmp_path: Path
):
    """Without a view in the URL the page fits the vehicles; ``SISCOM_UPDATE_SCREENSHOT=1`` saves
    the picture as the README's docs/demo.png."""
    server = make_server(STREAM_MAP_TILE_URL=tiles.url_template, KAFKA_ALERTS_TOPIC=alerts_topic)
    await wait_ready(server)
    fleet = device_ids(25)
    stop = asyncio.Event()
    simulator = asyncio.create_task(
        run_simulator(
            broker.bootstrap, topic, devices=len(fleet), rate=50, stop=stop, alerts_topic=alerts_topic, alert_every=40
        )
    )
    try:
        page, log = await open_page(browser, f"{server.url}/")

        async def all_drawn() -> bool:
            return await marker_count(page) == len(fleet)

        await until(all_drawn, timeout=20)
        # Every marker is inside the map, which fitted the fleet, and tiles were loaded for it.
        map_box = await page.locator("#map").bounding_box()
        for marker in await page.locator(MARKERS).all():
            box = await marker.bounding_box()
            assert map_box["x"] <= box["x"] + box["width"] / 2 <= map_box["x"] + map_box["width"]
            assert map_box["y"] <= box["y"] + box["height"] / 2 <= map_box["y"] + map_box["height"]
        # The tiles under the view came from the configured server.
        sources = await page.locator("#map img.leaflet-tile-loaded").evaluate_all("els => els.map(e => e.src)")
        assert sources and all(src.startswith(f"{tiles.origin}/tiles/") for src in sources)
        await page.locator("#alerts li").first.wait_for(timeout=15_000)
        update = os.environ.get("SISCOM_UPDATE_SCREENSHOT") == "1"
        await asyncio.sleep(45.0 if update else 2.0)  # for the README, trails long enough to see
        await page.screenshot(path=tmp_path / "demo.png")
        if update:
            SCREENSHOT.write_bytes((tmp_path / "demo.png").read_bytes())
        assert log.problems() == []
    finally:
        stop.set()
        await asyncio.wait_for(simulator, 10)
