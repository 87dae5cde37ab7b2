"""Alert backlogs resume (issue 21, item 5): the bound of waiting alerts is for live lag.

``STREAM_MAX_PENDING_FRAMES`` closes a client that lets alerts pile up; it must not refuse a
client the backlog it asked for (a resume over more alerts than the bound: they come as fast as
it reads, every one once), nor a burst of alerts that arrived together while it kept up.
Real broker, the server as a process, real WebSocket clients that read.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from support import ws_client
from support.kafka import produce
from support.status import stats, wait_ready, wait_stats

BOUND = 20  # STREAM_MAX_PENDING_FRAMES
ALERTS = 150


def value(device: str, seq: int, **extra) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, **extra}}).encode()


async def frames_until(client, count: int, timeout: float = 20.0) -> list[dict]:
    """The next ``count`` data frames (messages and alerts)."""
    return [await client.next_frame(timeout) for _ in range(count)]


@pytest.mark.parametrize("window_records", ["100000", "5"], ids=["from-the-window", "from-the-log"])
async def test_a_client_resuming_over_more_alerts_than_the_bound_gets_each_once_then_live(
    make_server, broker, topic_factory, window_records
):
    topic = await topic_factory()
    alerts = await topic_factory(prefix="alerts")
    server = make_server(
        KAFKA_TOPIC=topic,
        KAFKA_ALERTS_TOPIC=alerts,
        STREAM_MAX_PENDING_FRAMES=BOUND,
        STREAM_REPLAY_WINDOW_RECORDS=window_records,
    )
    await wait_ready(server)
    url = server.ws_url("/api/v1/stream?device_ids=" + quote("d0"))
    async with ws_client(url) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [value("d0", 0)])
        cursor = (await client.next_frame(10))["id"]
    await wait_stats(server, lambda s: s["connections"] == 0)
    # Away: many more alerts than the bound, for its device and another, and positions.
    await produce(broker.bootstrap, alerts, [value("d0" if n % 3 else "d1", n, ALERT="SOS") for n in range(ALERTS)])
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(1, 31)])
    await wait_stats(server, lambda s: s["records"] >= 1 + ALERTS + 30)
    mine = [n for n in range(ALERTS) if n % 3]
    assert len(mine) > 4 * BOUND
    async with ws_client(url + "&cursor=" + cursor) as client:
        assert await client.next_frame(10) == {"event": "resumed", "data": {"recovered": True}}
        replayed = await frames_until(client, len(mine) + 30)
        await produce(broker.bootstrap, alerts, [value("d0", 1000, ALERT="LIVE")])
        live = await client.next_frame(10)
    got_alerts = [f["data"]["data"]["SEQ"] for f in replayed if f["event"] == "alert"]
    got_positions = [f["data"]["data"]["SEQ"] for f in replayed if f["event"] == "message"]
    assert got_alerts == mine, "every alert of its device, once, in order"
    assert got_positions == list(range(1, 31))
    assert live["event"] == "alert" and live["data"]["data"]["SEQ"] == 1000
    counters = stats(server)
    assert counters["slow_client_closes"] == 0
    assert counters["resumes_recovered"] == 1
    if window_records == "5":
        assert counters["history_reads_by_partition"], "read from the log"


async def test_a_burst_of_alerts_larger_than_the_bound_reaches_a_client_that_reads(make_server, broker, topic_factory):
    topic = await topic_factory()
    alerts = await topic_factory(prefix="alerts")
    server = make_server(KAFKA_TOPIC=topic, KAFKA_ALERTS_TOPIC=alerts, STREAM_MAX_PENDING_FRAMES=BOUND)
    await wait_ready(server)
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=d0")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, alerts, [value("d0", n, ALERT="SOS") for n in range(5 * BOUND)])
        burst = await frames_until(client, 5 * BOUND)
    assert [f["data"]["data"]["SEQ"] for f in burst] == list(range(5 * BOUND))
    assert stats(server)["slow_client_closes"] == 0
