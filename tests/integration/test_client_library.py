"""siscom-stream.js in a real browser: the demo page behind nginx, its replica killed mid-stream.

Also: the ES module and the plain script are one library; a stream with 4-second tokens is
refreshed by the library and outlives them. Two replicas with one environment behind a real
nginx (``deploy/nginx.conf``), Debian's Chromium driven by Playwright, alerts produced to the test
broker while the replica serving the page is SIGKILLed. The page's library reconnects through nginx
to the other replica with the last cursor it saw, and the alert list, which shows each record's id,
must hold every alert exactly once. The same holds with no library at all: a plain ``EventSource``,
whose browser reconnects by itself with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiokafka import AIOKafkaProducer
from support.kafka import produce
from support.status import stats, wait_ready

# The module shares one Chromium (tests/integration/conftest.py): its tests run in its loop.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

DEVICES = ("van-0", "van-1", "van-2")  # van-N is written to partition N of both topics
ALERTS = 30
KILL_AFTER = 12  # alerts produced before the page's replica is killed


def position(device: str, n: int) -> bytes:
    data = {"DEVICE_ID": device, "LATITUD": f"{20.59 + n * 0.001:.6f}", "LONGITUD": "-100.39", "SPEED": "30"}
    return json.dumps({"data": data, "uuid": f"{device}-pos-{n}"}).encode()


def alert(device: str, n: int) -> bytes:
    data = {"DEVICE_ID": device, "ALERT": "HARSH_BRAKING", "GPS_DATETIME": time.strftime("%Y-%m-%d %H:%M:%S")}
    return json.dumps({"data": data, "uuid": f"alert-{n:03d}"}).encode()


async def alert_ids(page: Any) -> list[str]:
    """The page's alert list, oldest first (the page puts each new alert on top)."""
    ids = await page.locator("#alerts li[data-alert-id]").evaluate_all("els => els.map(e => e.dataset.alertId)")
    return ids[::-1]


async def connections(server: Any) -> int:
    return (await asyncio.to_thread(stats, server))["connections"]


async def two_replicas_behind_nginx(server_factory, broker, topic_factory, nginx_factory, **settings: str):
    """Two replicas with one environment (positions and alerts topics, a partition per device)
    behind nginx: ``(servers, proxy, topic, alerts_topic)``."""
    topic = await topic_factory(partitions=len(DEVICES))
    alerts_topic = await topic_factory(partitions=len(DEVICES), prefix="alerts")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_ALERTS_TOPIC": alerts_topic,
        "KAFKA_FETCH_MAX_WAIT_MS": "10",
        "STREAM_TRUSTED_PROXIES": "127.0.0.1",
        **settings,
    }
    servers = [server_factory(env), server_factory(env)]
    for server in servers:
        await wait_ready(server)
    proxy = nginx_factory([server.url.removeprefix("http://") for server in servers])
    return servers, proxy, topic, alerts_topic


async def serving_and_other(servers: list[Any]) -> tuple[Any, Any]:
    """The replica serving the page's one stream, once it is open, and the other."""
    async with asyncio.timeout(15):
        while sum([await connections(server) for server in servers]) != 1:
            await asyncio.sleep(0.1)
    return tuple(servers if await connections(servers[0]) == 1 else servers[::-1])


async def write_alerts_killing(
    bootstrap: str, topic: str, alerts_topic: str, count: int, seen: Callable[[], Awaitable[int]], doomed: Any
) -> tuple[list[float], float]:
    """A position per device, then ``count`` alerts 0.1 s apart over the devices' partitions; once
    the page shows the first ``KILL_AFTER`` (its last cursor covers them), ``doomed`` is SIGKILLed.

    Returns when each alert was written and when the kill came (``time.time()``)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: list[float] = []
    try:
        for partition, device in enumerate(DEVICES):
            await producer.send_and_wait(topic, position(device, 0), partition=partition)
        for n in range(count):
            partition = n % len(DEVICES)
            await producer.send_and_wait(alerts_topic, alert(DEVICES[partition], n), partition=partition)
            sent.append(time.time())
            if n == KILL_AFTER - 1:
                async with asyncio.timeout(10):
                    while await seen() < KILL_AFTER:
                        await asyncio.sleep(0.05)
                killed = time.time()
                doomed.kill()
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return sent, killed


async def wait_all_shown(seen: Callable[[], Awaitable[int]], count: int) -> None:
    """Until the page shows ``count`` alerts (20 s at most), and half a second more: anything sent
    twice would arrive by then."""
    deadline = time.monotonic() + 20
    while await seen() < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


@pytest.mark.nginx
async def test_the_demo_page_resumes_on_the_other_replica_with_no_alert_missing_or_twice(
    server_factory, broker, topic_factory, nginx_factory, browser, tmp_path
):
    servers, proxy, topic, alerts_topic = await two_replicas_behind_nginx(
        server_factory, broker, topic_factory, nginx_factory, STREAM_MAP_TILE_URL="off"
    )
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    statuses: list[str] = []
    changes: list[tuple[float, str]] = []  # (when, status line) as the page shows them

    def report(text: str) -> None:
        if not statuses or statuses[-1] != text:
            statuses.append(text)
            changes.append((time.time(), text))

    await page.expose_function("reportStatus", report)
    # Every status line the page shows, as it changes.
    await page.add_init_script(
        "new MutationObserver(() => window.reportStatus(document.querySelector('#status').textContent))"
        ".observe(document, {subtree: true, childList: true, characterData: true});"
    )
    await page.goto(f"{proxy.url}/?device_ids={','.join(DEVICES)}")
    doomed, survivor = await serving_and_other(servers)

    async def shown() -> int:
        return len(await alert_ids(page))

    _, killed = await write_alerts_killing(broker.bootstrap, topic, alerts_topic, ALERTS, shown, doomed)
    await wait_all_shown(shown, ALERTS)
    expected = [f"alert-{n:03d}" for n in range(ALERTS)]
    await page.screenshot(path=str(tmp_path / "demo-resumed.png"))
    shown_ids = await alert_ids(page)
    assert sorted(shown_ids) == expected, (shown_ids, statuses)  # none missing, none twice
    for device in DEVICES:  # and in log order per partition
        mine = await page.locator(f'#alerts li[data-device-id="{device}"]').evaluate_all(
            "els => els.map(e => e.dataset.alertId)"
        )
        assert mine[::-1] == sorted(mine), mine
    assert await connections(survivor) == 1
    assert any(line.startswith("connection lost") for line in statuses), statuses
    assert statuses[-1] == "live (resumed)", statuses
    resumed = next(when for when, text in changes if when > killed and text == "live (resumed)")
    print(f"page resumed on the other replica {1000 * (resumed - killed):.0f} ms after the kill")
    assert await page.locator("#alerts li.gap").count() == 0


# A page with a plain EventSource and no code of its own to reconnect: it only keeps what it gets
# (and shows the alert ids, for the screenshot). Opens and errors are recorded to time the outage.
EVENT_SOURCE_PAGE = """
window.frames = []; window.opens = []; window.errors = [];
document.body.textContent = 'alerts received:';
const source = new EventSource('/api/v1/stream?device_ids=%s');
source.onopen = () => window.opens.push(Date.now() / 1000);
source.onerror = () => window.errors.push(Date.now() / 1000);
source.onmessage = (event) => {
  const frame = JSON.parse(event.data);
  window.frames.push(frame);
  if (frame.event === 'alert') document.body.textContent += ' ' + frame.data.uuid;
};
"""
SSE_ALERTS = 40
SSE_RETRY_MS = 1000  # the reconnect delay the server tells EventSource (default 3,000)


@pytest.mark.nginx
async def test_a_plain_event_source_page_resumes_by_itself_on_the_other_replica_with_no_alert_missing_or_twice(
    server_factory, broker, topic_factory, nginx_factory, browser, tmp_path
):
    """The SSE issue's promise: with cursors as event ids, the browser's own reconnect (after the
    server's ``retry:`` delay, with ``Last-Event-ID``) makes a plain ``new EventSource(url)``
    survive the death of its replica with nothing lost, nothing twice and no client code. Alerts
    keep coming while the page is away, so a reconnect that did not resume would lose some."""
    servers, proxy, topic, alerts_topic = await two_replicas_behind_nginx(
        server_factory, broker, topic_factory, nginx_factory, STREAM_SSE_RETRY_MILLISECONDS=str(SSE_RETRY_MS)
    )
    page = await browser.new_page(viewport={"width": 1280, "height": 400})
    await page.goto(f"{proxy.url}/health")  # a document of the proxy's origin for the page's script
    devtools = await page.context.new_cdp_session(page)
    result = await devtools.send("Runtime.evaluate", {"expression": EVENT_SOURCE_PAGE % ",".join(DEVICES)})
    assert "exceptionDetails" not in result, result
    doomed, survivor = await serving_and_other(servers)

    async def received() -> int:
        return await page.evaluate("window.frames.filter(f => f.event === 'alert').length")

    # 2.8 s of alerts after the kill: some while the page is away.
    sent, killed = await write_alerts_killing(broker.bootstrap, topic, alerts_topic, SSE_ALERTS, received, doomed)
    await wait_all_shown(received, SSE_ALERTS)
    await page.screenshot(path=str(tmp_path / "event-source-resumed.png"))
    frames, opens, errors = await page.evaluate("[window.frames, window.opens, window.errors]")
    alerts = [frame["data"] for frame in frames if frame["event"] == "alert"]
    got = [data["uuid"] for data in alerts]
    expected = [f"alert-{n:03d}" for n in range(SSE_ALERTS)]
    assert sorted(got) == expected, (got, [f for f in frames if f["event"] != "alert"])  # none missing, none twice
    for device in DEVICES:  # and in log order per partition
        mine = [data["uuid"] for data in alerts if data["data"]["DEVICE_ID"] == device]
        assert mine == sorted(mine), mine
    # One reconnect, by the browser, which sent its last event id: the survivor resumed from it.
    assert len(opens) == 2 and opens[0] < killed < opens[1], (opens, killed)
    assert [frame["data"] for frame in frames if frame["event"] == "resumed"] == [{"recovered": True}]
    assert await connections(survivor) == 1
    away = sum(killed < at < opens[1] for at in sent)
    assert away > 0, "no alert was written while the page was away: the run proves no resume"
    print(
        f"\nEventSource through nginx, retry {SSE_RETRY_MS} ms: live again {1000 * (opens[1] - killed):.0f} ms "
        f"after the kill (error seen after {1000 * (errors[0] - killed):.0f} ms); {len(got)} alerts received, "
        f"none missing, none twice; {away} of them written while the page was away"
    )


SECRET = "client-library-secret-" + "0123456789abcdef" * 2


def mint(devices: list[str], expires_in: float) -> str:
    return jwt.encode({"devices": devices, "exp": int(time.time() + expires_in)}, SECRET, algorithm="HS256")


async def test_in_chromium_the_es_module_and_the_plain_script_are_one_library_that_streams(
    make_server, broker, topic, browser
):
    server = make_server(STREAM_MAP_TILE_URL="off", KAFKA_FETCH_MAX_WAIT_MS="10")
    await wait_ready(server)
    page = await browser.new_page()
    await page.goto(f"{server.url}/")  # the demo page loads the plain script
    same = await page.evaluate(
        "async () => (await import('/static/siscom-stream.mjs')).SiscomStream === window.SiscomStream"
    )
    assert same is True
    await page.evaluate(
        """async () => {
            const { SiscomStream } = await import('/static/siscom-stream.mjs');
            window.got = [];
            window.moduleStream = new SiscomStream({
                deviceIds: ['lib-1'], onMessage: (data, frame) => window.got.push([data.data.SEQ, frame.id]),
            });
        }"""
    )
    async with asyncio.timeout(10):  # the demo page's stream and this one
        while (await asyncio.to_thread(stats, server))["connections"] != 2:
            await asyncio.sleep(0.1)
    await produce(
        broker.bootstrap, topic, [json.dumps({"data": {"DEVICE_ID": "lib-1", "SEQ": n}}).encode() for n in range(3)]
    )
    async with asyncio.timeout(10):
        while len(got := await page.evaluate("window.got")) < 3:
            await asyncio.sleep(0.1)
    assert [seq for seq, _ in got] == [0, 1, 2]
    assert all(isinstance(cursor, str) and cursor for _, cursor in got)
    assert await page.evaluate("window.moduleStream.cursor") == got[-1][1]


async def test_in_chromium_the_library_refreshes_its_short_tokens_and_keeps_the_stream(
    make_server, broker, topic, browser
):
    server = make_server(
        STREAM_JWT_SECRET=SECRET,
        STREAM_TOKEN_NOTICE_SECONDS="2",
        KAFKA_FETCH_MAX_WAIT_MS="10",
        STREAM_MAP_TILE_URL="off",
    )
    await wait_ready(server)
    issued: list[int] = []

    def token() -> str:
        text = mint(["lib-2"], 4)
        issued.append(jwt.decode(text, options={"verify_signature": False})["exp"])
        return text

    page = await browser.new_page()
    await page.expose_function("mintToken", token)
    await page.goto(f"{server.url}/health")
    await page.evaluate(
        """async () => {
            const { SiscomStream } = await import('/static/siscom-stream.mjs');
            window.got = []; window.statuses = [];
            window.tokenStream = new SiscomStream({
                deviceIds: ['lib-2'], getToken: () => window.mintToken(),
                onMessage: (data) => window.got.push(data.data.SEQ),
                onStatus: (status) => window.statuses.push(status),
            });
        }"""
    )
    # Two refreshes: the stream outlives its first two tokens on one connection.
    async with asyncio.timeout(15):
        while (await page.evaluate("window.statuses")).count("refreshed") < 2:
            await asyncio.sleep(0.1)
    assert time.time() > issued[0]
    await produce(broker.bootstrap, topic, [json.dumps({"data": {"DEVICE_ID": "lib-2", "SEQ": 5}}).encode()])
    async with asyncio.timeout(10):
        while await page.evaluate("window.got") != [5]:
            await asyncio.sleep(0.1)
    statuses = await page.evaluate("window.statuses")
    assert statuses.count("connecting") == 1 and "reconnecting" not in statuses, statuses
    stats_now = await asyncio.to_thread(stats, server, {"Authorization": f"Bearer {mint([], 60)}"})
    assert stats_now["token_refreshes"] >= 2 and stats_now["token_expiries"] == 0
