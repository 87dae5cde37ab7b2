"""Cursors end to end: a real broker, the app under Hypercorn, real WebSocket clients.

A client keeps the last ``id`` it saw, goes away while records keep coming, and comes back with
``?cursor=``: it must get exactly the records of its devices it missed (none lost, none twice, in
log order per partition), whether they come from the recent-records window or from the log.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import pytest
from aiokafka import AIOKafkaProducer
from chaos.faults import actors
from chaos.inprocess import InProcessServer
from support import ws_client
from support.kafka import produce
from support.status import stats, wait_ready, wait_stats

from siscom.config import Settings
from siscom.core import cursors
from siscom.dev.broker import create_topics
from siscom.gateway import Gateway

DEVICES = ("d0", "d1", "d2", "d3")
MINE = ("d0", "d2")


def value(device: str, seq: int, **extra) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, **extra}}).encode()


async def produce_spread(bootstrap: str, topic: str, first: int, count: int, partitions: int, **extra) -> None:
    """``count`` records, device ``seq % 4`` each, spread over the partitions in turn."""
    for partition in range(partitions):
        values = [
            value(DEVICES[seq % 4], seq, **extra)
            for seq in range(first, first + count)
            if seq % partitions == partition
        ]
        await produce(bootstrap, topic, values, partition=partition)


async def read_until_quiet(client, quiet: float = 1.0, limit: float = 20.0) -> list[dict]:
    """Every frame (pings too) until no record or alert has come for ``quiet`` seconds.

    Pings do not end the quiet: under a keep-alive shorter than ``quiet`` they never stop, and
    each read ran to ``limit`` (20 s, most of these tests' time) instead of ending ``quiet``
    seconds after the last record.
    """
    frames = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last = loop.time()  # of the start, then of the last record or alert
    while (left := min(last + quiet, deadline) - loop.time()) > 0:
        try:
            frame = await client.next_frame(left, skip_pings=False)
        except TimeoutError:
            break
        frames.append(frame)
        if frame["event"] != "ping":
            last = loop.time()
    return frames


def seqs(frames: list[dict], event: str = "message") -> list[int]:
    return [frame["data"]["data"]["SEQ"] for frame in frames if frame["event"] == event]


def last_id(frames: list[dict]) -> str:
    return [frame["id"] for frame in frames if "id" in frame][-1]


async def run_disconnect_cycle(
    server, bootstrap, topic, alerts_topic, partitions: int
) -> tuple[list[dict], list[dict]]:
    """Connect, read, leave, let records come, resume with the last id; return both runs' frames."""
    url = server.ws_url("/api/v1/stream?device_ids=" + quote(",".join(MINE)))
    async with ws_client(url, skip_pings=False) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce_spread(bootstrap, topic, 0, 40, partitions)
        await produce(bootstrap, alerts_topic, [value("d0", 1000, ALERT="PANIC"), value("d1", 1001, ALERT="PANIC")])
        first = await read_until_quiet(client)
    await wait_stats(server, lambda s: s["connections"] == 0)
    # Away: positions and alerts of its devices and others keep coming.
    await produce_spread(bootstrap, topic, 40, 60, partitions)
    await produce(bootstrap, alerts_topic, [value("d2", 1002, ALERT="HARSH"), value("d3", 1003, ALERT="HARSH")])
    await wait_stats(server, lambda s: s["records"] >= 104)
    async with ws_client(url + "&cursor=" + last_id(first), skip_pings=False) as client:
        opening = await client.next_frame(5, skip_pings=False)
        assert opening == {"event": "resumed", "data": {"recovered": True}}
        await produce_spread(bootstrap, topic, 100, 20, partitions)  # live, after the replay
        second = await read_until_quiet(client)
    return first, second


def assert_exact(first: list[dict], second: list[dict], partitions: int) -> None:
    """Every record of the client's devices once, each partition in log order."""
    got = seqs(first) + seqs(second)
    expected = [seq for seq in range(120) if DEVICES[seq % 4] in MINE]
    assert sorted(got) == expected, f"missing {set(expected) - set(got)}, twice {[s for s in got if got.count(s) > 1]}"
    for partition in range(partitions):
        in_partition = [seq for seq in got if seq % partitions == partition]
        assert in_partition == sorted(in_partition), f"partition {partition} out of order: {in_partition}"
    assert sorted(seqs(first, "alert") + seqs(second, "alert")) == [1000, 1002]


async def test_a_client_resuming_with_its_last_id_gets_exactly_what_it_missed_from_the_window(
    make_server, broker, topic_factory
):
    topic = await topic_factory(partitions=3)
    alerts = await topic_factory(prefix="alerts")
    server = make_server(KAFKA_TOPIC=topic, KAFKA_ALERTS_TOPIC=alerts, STREAM_KEEPALIVE_SECONDS=0.5)
    await wait_ready(server)
    first, second = await run_disconnect_cycle(server, broker.bootstrap, topic, alerts, 3)
    assert_exact(first, second, 3)
    counters = stats(server)
    assert counters["resumes_recovered"] == 1
    assert counters["history_reads_by_partition"] == {}, "served from the window, without reading the log"
    assert counters["window"]["records"] >= 100


async def test_a_client_resuming_past_the_window_gets_exactly_what_it_missed_from_the_log(
    make_server, broker, topic_factory
):
    topic = await topic_factory(partitions=3)
    alerts = await topic_factory(prefix="alerts")
    server = make_server(
        KAFKA_TOPIC=topic, KAFKA_ALERTS_TOPIC=alerts, STREAM_KEEPALIVE_SECONDS=0.5, STREAM_REPLAY_WINDOW_RECORDS=5
    )
    await wait_ready(server)
    first, second = await run_disconnect_cycle(server, broker.bootstrap, topic, alerts, 3)
    assert_exact(first, second, 3)
    counters = stats(server)
    assert counters["resumes_recovered"] == 1
    assert counters["replayed_records"] > 0
    assert set(counters["history_reads_by_partition"]) == {f"{topic}[{p}]" for p in range(3)} | {f"{alerts}[0]"}


async def test_since_replays_the_records_from_that_time_then_goes_live(make_server, broker, topic):
    server = make_server()
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(5)])
    await wait_stats(server, lambda s: s["records"] >= 5)
    await asyncio.sleep(0.05)
    since_ms = int(time.time() * 1000)
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(5, 15)] + [value("d1", 99)])
    await wait_stats(server, lambda s: s["records"] >= 16)
    rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since_ms // 1000)) + f".{since_ms % 1000:03d}Z"
    live: list[int] = []
    for since in (str(since_ms), rfc3339):
        async with ws_client(server.ws_url(f"/api/v1/stream?device_ids=d0&since={since}")) as client:
            assert await client.next_frame() == {"event": "resumed", "data": {"recovered": True}}
            live.append(100 + len(live))
            await produce(broker.bootstrap, topic, [value("d0", live[-1])])
            frames = await read_until_quiet(client, 0.7)
        # Each client: the span since then (earlier clients' live records included), then live.
        assert seqs(frames) == [*range(5, 15), *live], seqs(frames)
        await wait_stats(server, lambda s: s["connections"] == 0)


async def test_since_in_the_future_of_the_log_replays_nothing_and_goes_live(make_server, broker, topic):
    """tansu answers offsets-for-times after the last record with offset 0 and timestamp -1: that
    must mean the log end, not the log start."""
    server = make_server(STREAM_REPLAY_WINDOW_RECORDS=0)
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(5)])
    await wait_stats(server, lambda s: s["records"] >= 5)
    since = int(time.time() * 1000) + 60_000
    async with ws_client(server.ws_url(f"/api/v1/stream?device_ids=d0&since={since}")) as client:
        assert await client.next_frame() == {"event": "resumed", "data": {"recovered": True}}
        await produce(broker.bootstrap, topic, [value("d0", 5)])
        frames = await read_until_quiet(client, 0.7)
    assert seqs(frames) == [5]


@pytest.fixture(scope="module")
def strict_server(module_server_factory):
    """One server for every malformed cursor or time: each test only reads what it answers (and
    one counter, from where it stood)."""
    return module_server_factory("bad-resume", STREAM_REPLAY_MAX_SECONDS="600")


@pytest.mark.parametrize(
    "query",
    [
        "cursor=not-a-cursor!",
        "cursor=" + "A" * 5000,
        "cursor=AQ",
        "cursor=" + cursors.encode(123, ((5, 6, 7),))[:-3],
        "since=yesterday",
        "since=2020-01-01T00:00:00Z",
        f"cursor={cursors.encode(1, ((1,),))}&since=1",
    ],
    ids=["garbage", "oversized", "truncated", "cut-short", "since-not-a-time", "since-too-old", "both"],
)
async def test_a_malformed_cursor_or_since_gets_an_error_frame_and_1008(strict_server, query):
    server = strict_server
    await wait_ready(server)
    rejected = stats(server)["rejected_requests"]
    async with ws_client(server.ws_url(f"/api/v1/stream?{query}")) as client:
        frame = await client.next_frame()
        assert frame["event"] == "error"
        assert await client.wait_closed() == 1008
    if query.startswith("since=2020"):
        assert "STREAM_REPLAY_MAX_SECONDS" in frame["data"]["message"]
    await wait_stats(server, lambda s: s["rejected_requests"] == rejected + 1)


async def test_a_cursor_naming_partitions_that_no_longer_exist_is_not_recovered_and_gets_the_snapshot(
    make_server, broker, topic
):
    server = make_server()
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", 1)])
    await wait_stats(server, lambda s: s["records"] >= 1)
    crc = cursors.topics_crc([topic])
    stale = cursors.encode(crc, ((0, 0, 0, 0),))  # four partitions; the topic has one
    other_topics = cursors.encode(cursors.topics_crc(["elsewhere"]), ((0,),))
    for cursor, reason in ((stale, "no longer exist"), (other_topics, "other topics")):
        async with ws_client(server.ws_url(f"/api/v1/stream?device_ids=d0&cursor={cursor}")) as client:
            opening = await client.next_frame()
            assert opening["event"] == "resumed" and opening["data"]["recovered"] is False
            assert reason in opening["data"]["reason"]
            snapshot = await client.next_frame()
            assert snapshot["data"]["data"]["SEQ"] == 1 and "id" in snapshot
        await wait_stats(server, lambda s: s["connections"] == 0)
    assert stats(server)["resumes_not_recovered"] == 2


async def test_a_cursor_from_before_the_broker_restarted_empty_is_not_recovered(broker_factory, server_factory):
    broker = broker_factory()
    await create_topics(broker.bootstrap, {"positions": 1})
    server = server_factory({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": "positions"})
    await wait_ready(server)
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=d0")) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, "positions", [value("d0", seq) for seq in range(20)])
        frames = await read_until_quiet(client, 0.7)
    cursor = last_id(frames)
    broker.restart()
    await create_topics(broker.bootstrap, {"positions": 1})
    await produce(broker.bootstrap, "positions", [value("d0", 500)])
    await wait_stats(server, lambda s: s["records"] >= 21, timeout=30)
    async with ws_client(server.ws_url(f"/api/v1/stream?device_ids=d0&cursor={cursor}")) as client:
        opening = await client.next_frame(10)
        assert opening["event"] == "resumed" and opening["data"]["recovered"] is False, opening
        assert "replaced" in opening["data"]["reason"]
        snapshot = await client.next_frame()
        assert snapshot["data"]["data"]["SEQ"] == 500


async def test_pings_carry_the_cursor_a_quiet_client_resumes_from(make_server, broker, topic):
    server = make_server(STREAM_KEEPALIVE_SECONDS=0.3)
    await wait_ready(server)
    url = server.ws_url("/api/v1/stream?device_ids=d0")
    async with ws_client(url, skip_pings=False) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        # Records of another device only: the client gets pings, whose cursor moves past them.
        await produce(broker.bootstrap, topic, [value("d1", seq) for seq in range(10)])
        await wait_stats(server, lambda s: s["records"] >= 10)
        frames = await read_until_quiet(client, 0.8)
    pings = [frame for frame in frames if frame["event"] == "ping"]
    assert pings and all(set(frame) == {"event", "id", "data"} for frame in pings)
    _, vector = cursors.decode(pings[-1]["id"])
    assert vector == ((10,),)
    await produce(broker.bootstrap, topic, [value("d0", 11)])
    async with ws_client(url + "&cursor=" + pings[-1]["id"]) as client:
        assert (await client.next_frame())["data"] == {"recovered": True}
        assert (await client.next_frame())["data"]["data"]["SEQ"] == 11


async def test_a_quiet_clients_cursor_stays_true_across_a_consumer_restart(broker, topic_factory):
    """A cursor handed out before any record names where reading starts; a restarted consumer
    goes on from there (its read offsets outlive it), so that cursor still resumes exactly."""
    topic = await topic_factory(partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await run_consumer_restart(broker, topic, producer)
    finally:
        await producer.stop()


async def run_consumer_restart(broker, topic: str, producer: AIOKafkaProducer) -> None:
    for seq in range(6):  # one record a request: the test broker reports the log end late after batches
        await producer.send_and_wait(topic, value("d1", seq), partition=seq % 2)
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
            "STREAM_KEEPALIVE_SECONDS": "0.3",
        }
    )
    gateway = Gateway(settings, **actors("consumer-crash-on-demand"))
    async with InProcessServer(settings, gateway=gateway) as server:
        await wait_ready(server)
        url = server.ws_url("/api/v1/stream?device_ids=d0")
        async with ws_client(url, skip_pings=False) as client:
            ping = await client.next_frame(3, skip_pings=False)
        assert cursors.decode(ping["id"])[1] == ((3, 3),), "reading starts at the log's end"
        pipeline = next(child.actor for child in gateway.root.which_children() if child.id == "pipeline")
        consumer = next(child for child in pipeline.which_children() if child.id == "consumer")
        consumer.actor.crash()
        async with asyncio.timeout(10):
            while consumer.restarts == 0 or not gateway.ready:
                await asyncio.sleep(0.05)
                consumer = next(child for child in pipeline.which_children() if child.id == "consumer")
        for seq in range(100, 104):
            await producer.send_and_wait(topic, value("d0", seq), partition=seq % 2)
        await wait_stats(server, lambda s: s["records"] >= 4)
        async with ws_client(url + "&cursor=" + ping["id"]) as client:
            assert (await client.next_frame())["data"] == {"recovered": True}
            frames = [await client.next_frame() for _ in range(4)]
            with pytest.raises(TimeoutError):
                await client.next_frame(0.5)  # nothing more (pings aside)
    assert sorted(seqs(frames)) == [100, 101, 102, 103]
