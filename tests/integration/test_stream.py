"""The stream end to end: a real broker, the app under Hypercorn, real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from urllib.parse import quote

import pytest
from support import collect, ws_client
from support.http import http_get_json
from support.kafka import produce
from support.status import stats, wait_ready, wait_stats


def record(device_id: str, n: int, **extra) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n, **extra}, "uuid": f"{device_id}-{n}"}).encode()


def seqs(frames, device_id=None):
    return [
        f["data"]["data"]["SEQ"] for f in frames if device_id is None or f["data"]["data"]["DEVICE_ID"] == device_id
    ]


async def test_a_client_without_filter_receives_every_record_byte_for_byte(make_server, broker, topic):
    server = make_server()
    await wait_ready(server)
    values = [record(f"dev-{n % 3}", n) for n in range(30)]
    values.append(b'{"data": {"DEVICE_ID": "spaced",   "x": [1, 2.50, "\\u00e9"]}}')
    async with ws_client(server.ws_url()) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, values)
        frames = [await client.connection.recv() for _ in values]
    for text, value in zip(frames, values):
        # The Kafka value is embedded unchanged: the frame is the envelope around those bytes,
        # after its cursor.
        cursor = json.loads(text)["id"]
        assert text == '{"event":"message","id":"' + cursor + '","data":' + value.decode() + "}"
        assert json.loads(text)["data"] == json.loads(value)


@pytest.fixture(scope="module")
def shared_server(module_server_factory):
    """One default server for the tests below that only read what it serves: each uses devices
    of its own, counts from where the counters stood, and starts once the earlier test's
    streams have ended (``plain_server``)."""
    return module_server_factory("plain")


@pytest.fixture
async def plain_server(shared_server):
    await wait_ready(shared_server)
    await wait_stats(shared_server, lambda s: s["connections"] == 0 and s["devices_subscribed"] == 0)
    return shared_server


async def test_device_ids_filter_delivers_only_the_subscribed_devices(plain_server, broker):
    server, topic = plain_server, plain_server.topic
    one = server.ws_url("/api/v1/stream?device_ids=dev-1")
    several = server.ws_url("/api/v1/stream?device_ids=" + quote(" dev-2 , dev-0,,dev-2 ,"))
    async with ws_client(one) as only_one, ws_client(several) as two:
        await wait_stats(server, lambda s: s["connections"] == 2)
        await produce(broker.bootstrap, topic, [record(f"dev-{n % 4}", n) for n in range(40)])
        first = await collect(only_one, 10)
        second = await collect(two, 20)
        assert {f["data"]["data"]["DEVICE_ID"] for f in first} == {"dev-1"}
        assert seqs(first) == list(range(1, 40, 4))
        assert {f["data"]["data"]["DEVICE_ID"] for f in second} == {"dev-0", "dev-2"}
        assert seqs(second, "dev-0") == list(range(0, 40, 4))
        assert seqs(second, "dev-2") == list(range(2, 40, 4))
        with pytest.raises(TimeoutError):
            await only_one.next_frame(0.3)


async def test_alerts_topic_records_arrive_as_alert_frames(make_server, broker, topic, alerts_topic):
    server = make_server(KAFKA_ALERTS_TOPIC=alerts_topic)
    await wait_ready(server)
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=bus-7")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, alerts_topic, [record("bus-7", 1, ALERT="PANIC"), record("bus-8", 2)])
        frame = await client.next_frame()
    assert isinstance(frame.pop("id"), str)  # its cursor
    assert frame == {
        "event": "alert",
        "data": {"data": {"DEVICE_ID": "bus-7", "SEQ": 1, "ALERT": "PANIC"}, "uuid": "bus-7-1"},
    }


async def test_a_late_subscriber_first_gets_the_last_position_of_each_device(plain_server, broker):
    server, topic = plain_server, plain_server.topic
    read = stats(server)["records"]
    await produce(broker.bootstrap, topic, [record(f"car-{n % 3}", n) for n in range(9)])
    await wait_stats(server, lambda s: s["records"] >= read + 9)
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=car-0,car-2,car-9")) as client:
        snapshot = await collect(client, 2)
        assert sorted(seqs(snapshot)) == [6, 8]
        with pytest.raises(TimeoutError):
            await client.next_frame(0.3)


async def test_snapshot_can_be_turned_off(make_server, broker, topic):
    server = make_server(STREAM_SNAPSHOT="false")
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [record("car-0", 1)])
    await wait_stats(server, lambda s: s["records"] >= 1)
    async with ws_client(server.ws_url()) as client:
        with pytest.raises(TimeoutError):
            await client.next_frame(0.5)


async def test_keep_alive_pings_arrive_at_the_configured_interval(make_server):
    server = make_server(STREAM_KEEPALIVE_SECONDS="0.3")
    async with ws_client(server.ws_url(), skip_pings=False) as client:
        started = time.monotonic()
        pings = [await client.next_frame(2.0) for _ in range(3)]
        elapsed = time.monotonic() - started
    # Even before any record, a ping carries the cursor of where reading starts.
    assert [{**ping, "id": "?"} for ping in pings] == [{"event": "ping", "id": "?", "data": {"type": "keep-alive"}}] * 3
    assert 0.6 <= elapsed < 3.0


async def test_on_an_idle_stream_each_ping_comes_about_one_interval_after_the_open_or_the_last_ping(make_server):
    """Proxies are set to cut streams silent for just over the interval: a ping late by half an
    interval or more would get idle clients cut in production."""
    interval = 0.5
    server = make_server(STREAM_KEEPALIVE_SECONDS=str(interval), STREAM_SNAPSHOT="false")
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=idle-1"), skip_pings=False) as client:
        times = [time.monotonic()]
        for _ in range(4):
            assert (await client.next_frame(3 * interval))["event"] == "ping"
            times.append(time.monotonic())
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    print(f"\nSTREAM_KEEPALIVE_SECONDS={interval}: gaps between open and pings {[round(g, 3) for g in gaps]} s")
    assert all(0.8 * interval <= gap <= 1.5 * interval for gap in gaps), gaps


@pytest.fixture(scope="module")
def strict_server(module_server_factory):
    """One server for every bad query: each test only reads what it answers (and one counter)."""
    return module_server_factory("bad-query", STREAM_MAX_DEVICE_IDS="5")


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("device_ids=" + quote("ok,bad id"), "bad id"),
        ("device_ids=" + "x" * 65, "x" * 10),
        ("device_ids=" + quote("a/b"), "a/b"),
        ("device_ids=" + ",".join(f"d{n}" for n in range(6)), "5"),
    ],
)
async def test_a_bad_query_gets_an_error_frame_then_close_1008(strict_server, query, fragment):
    rejected = stats(strict_server)["rejected_requests"]
    async with ws_client(strict_server.ws_url(f"/api/v1/stream?{query}")) as client:
        frame = await client.next_frame()
        assert frame["event"] == "error"
        assert fragment in frame["data"]["message"]
        assert await client.wait_closed() == 1008
    assert stats(strict_server)["rejected_requests"] == rejected + 1


async def test_malformed_records_are_counted_and_skipped_while_good_ones_flow(make_server, broker, topic):
    server = make_server(STREAM_MAX_RECORD_BYTES="2000")
    await wait_ready(server)
    bad = [
        b"\xff\xfe not utf-8",
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"data": {"SPEED": "1"}}',
        b'{"data": {"DEVICE_ID": "big", "pad": "' + b"x" * 3000 + b'"}}',
        b'{"data": {"DEVICE_ID": "no spaces allowed", "SEQ": 99}}',  # no client could name it
    ]
    async with ws_client(server.ws_url()) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [record("ok", 0), *bad, record("ok", 1)])
        frames = await collect(client, 2)
        assert seqs(frames) == [0, 1]
    body = await wait_stats(server, lambda s: s["malformed_records"] == len(bad))
    assert body["records"] == len(bad) + 2
    log = server.log_text()
    assert f"{topic}[0]@1 (not UTF-8" in log
    assert "no device id" in log and "too large" in log and "not JSON" in log and "bad device id" in log


async def test_without_a_broker_the_app_serves_and_delivers_once_one_appears(broker_factory, server_factory, tmp_path):
    # broker_factory first: fixtures end in reverse order, so the server stops while its broker
    # still runs (stopping after it, its consumer would wait out its timeouts for nothing).
    from siscom.dev.broker import create_topics, free_port

    port = free_port()
    server = server_factory(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "KAFKA_TOPIC": "late",
            "KAFKA_AUTO_OFFSET_RESET": "earliest",
            "KAFKA_RECONNECT_BACKOFF_MAX_SECONDS": "0.5",
            # Every record live: no warm-up (it would make a snapshot of those
            # written before the first connection).
            "STREAM_SNAPSHOT_LOOKBACK_SECONDS": "0",
        }
    )
    status, body = http_get_json(f"{server.url}/health")
    assert status == 200
    status, body = http_get_json(f"{server.url}/ready")
    assert status == 503 and "unreachable" in body["reason"]
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=late-1")) as client:
        with pytest.raises(TimeoutError):
            await client.next_frame(0.5)
        late = broker_factory(port=port)
        await create_topics(late.bootstrap, {"late": 1})
        await produce(late.bootstrap, "late", [record("late-1", 1), record("late-2", 2), record("late-1", 3)])
        frames = await collect(client, 2, timeout=30)
        assert seqs(frames) == [1, 3]
    await wait_ready(server)
    assert "Cannot connect to Kafka" in server.log_text()


async def test_a_record_produced_once_ready_is_delivered_with_offset_reset_latest(make_server, broker, topic_factory):
    topic = await topic_factory(partitions=3)
    server = make_server(KAFKA_TOPIC=topic, KAFKA_AUTO_OFFSET_RESET="latest")
    async with ws_client(server.ws_url()) as client:
        body = await wait_ready(server)
        assert body["assigned_partitions"] == body["total_partitions"] == 3
        await produce(broker.bootstrap, topic, [record(f"p{n}", n) for n in range(6)])
        assert sorted(seqs(await collect(client, 6))) == list(range(6))


async def test_ready_comes_with_the_start_offsets_and_not_at_the_next_offset_probe(broker, topic_factory, monkeypatch):
    """Ready once the consumer has noted where it reads every partition, as it does before its
    first fetch: waiting for the offset probe (every second) made every start and reconnect a
    second late, for a load balancer and for each test that waits for a ready server."""
    from chaos.inprocess import InProcessServer

    from siscom.config import Settings
    from siscom.pipeline import consumer

    monkeypatch.setattr(consumer, "PROBE_INTERVAL", 60.0)  # no probe within this test
    topic = await topic_factory(partitions=2)
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10"}
    )
    async with InProcessServer(settings) as server:
        body = await wait_ready(server, timeout=15)
    assert body["assigned_partitions"] == body["total_partitions"] == 2


async def test_stats_report_connections_records_frames_and_partitions(make_server, broker, topic):
    server = make_server()
    await wait_ready(server)
    async with ws_client(server.ws_url()) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [record("s", n) for n in range(5)])
        await collect(client, 5)
        body = await wait_stats(server, lambda s: s["frames_sent"] >= 5)
    assert body["records"] == 5
    assert body["kafka"] == {"connected": True, "assigned_partitions": 1, "total_partitions": 1}
    await wait_stats(server, lambda s: s["connections"] == 0 and s["devices_subscribed"] == 0)


async def test_sigterm_closes_clients_with_1001_and_exits_zero(make_server):
    server = make_server()
    async with ws_client(server.ws_url()) as first, ws_client(server.ws_url("/api/v1/stream?device_ids=a")) as second:
        await wait_stats(server, lambda s: s["connections"] == 2)
        started = time.monotonic()
        code = await asyncio.to_thread(server.stop)
        assert code == 0
        assert time.monotonic() - started < 8
        assert await first.wait_closed() == 1001
        assert await second.wait_closed() == 1001


def test_bad_configuration_stops_the_start_with_one_line(server_factory):
    cases = {
        "KAFKA_TOPIC": "tracking/data",
        "KAFKA_AUTO_OFFSET_RESET": "newest",
        "STREAM_KEEPALIVE_SECONDS": "soon",
        "KAFKA_FETCH_MAX_WAIT_MS": "0",  # an idle gateway would poll the broker in a busy loop
    }
    for variable, value in cases.items():
        server = server_factory({variable: value}, started=False)
        result = subprocess.run(server.command, env=server.env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert variable in lines[0] and repr(value) in lines[0]
        assert "Traceback" not in result.stderr


async def test_a_client_that_disconnects_leaves_nothing_behind(plain_server):
    server = plain_server
    before = stats(server)
    for _ in range(20):
        async with ws_client(server.ws_url("/api/v1/stream?device_ids=gone-a,gone-b")):
            pass
    body = await wait_stats(server, lambda s: s["connections"] == 0 and s["devices_subscribed"] == 0)
    opened = body["connections_opened"] - before["connections_opened"]
    assert opened == body["connections_closed"] - before["connections_closed"] == 20
    assert "Traceback" not in server.log_text()


async def test_clients_change_subscription_without_reconnecting(plain_server, broker):
    server, topic = plain_server, plain_server.topic
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=a")) as client:
        await client.send(json.dumps({"action": "subscribe", "device_ids": ["b"]}))
        ack = await client.next_frame()
        assert ack == {"event": "ack", "data": {"action": "subscribe", "device_ids": ["a", "b"]}}
        await client.send(json.dumps({"action": "unsubscribe", "device_ids": ["a"]}))
        assert (await client.next_frame())["data"]["device_ids"] == ["b"]
        await client.send(json.dumps({"action": "subscribe", "device_ids": ["no spaces allowed"]}))
        assert (await client.next_frame())["event"] == "error"
        await client.send("not a command")  # ignored
        await produce(broker.bootstrap, topic, [record("a", 1), record("b", 2)])
        assert seqs(await collect(client, 1)) == [2]
