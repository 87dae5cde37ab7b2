"""Map subscriptions end to end: a real broker, the app under Hypercorn, real WebSocket clients.

A box with enter and leave (also across the antimeridian), panning with subscribe messages,
``max_hz`` on a device reporting at 10 Hz, ``fields`` checked byte for byte, and the bad values.
"""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from support import collect, ws_client
from support.kafka import produce
from support.status import stats, wait_ready, wait_stats

from siscom.dev.simulator import QUERETARO, FleetSimulator


def track_record(device_id: str, seq: int, lat: float, lon: float) -> bytes:
    """The brief's shape: coordinates as signed strings."""
    return orjson.dumps(
        {"data": {"DEVICE_ID": device_id, "SEQ": seq, "LATITUD": f"{lat:+.6f}", "LONGITUD": f"{lon:+.6f}"}}
    )


def inside(lat: float, lon: float, box: tuple[float, float, float, float]) -> bool:
    """Containment written out independently of the gateway's code."""
    west, south, east, north = box
    if not south <= lat <= north:
        return False
    if west <= east:
        return west <= lon <= east
    return lon >= west or lon <= east  # across the antimeridian


def expected_frames(records: list[bytes], box) -> list[tuple[str, str, object]]:
    """What a client of ``box`` must see, in order: positions inside, one leave per exit."""
    seen: dict[str, bool] = {}
    frames = []
    for value in records:
        data = json.loads(value)["data"]
        device, lat, lon = data["DEVICE_ID"], float(data["LATITUD"]), float(data["LONGITUD"])
        if inside(lat, lon, box):
            seen[device] = True
            frames.append(("message", device, value.decode()))
        elif seen.get(device):
            seen[device] = False
            frames.append(("leave", device, None))
    return frames


def as_seen(frame: dict) -> tuple[str, str, object]:
    if frame["event"] == "leave":
        return ("leave", frame["data"]["device_id"], None)
    return (frame["event"], frame["data"]["data"]["DEVICE_ID"], None)


async def receive(client, count: int, timeout: float = 15.0) -> list[str]:
    texts = []
    async with asyncio.timeout(timeout):
        while len(texts) < count:
            frame = await client.next_frame(timeout)
            texts.append(json.dumps(frame) if not isinstance(frame, str) else frame)
    return texts


async def assert_quiet(client, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await client.next_frame(seconds)


def bbox_url(server, box, **query) -> str:
    parts = [f"bbox={','.join(str(v) for v in box)}"] + [f"{k}={v}" for k, v in query.items()]
    return server.ws_url("/api/v1/stream?" + "&".join(parts))


@pytest.fixture(scope="module")
def unsnapshotted_server(module_server_factory):
    """One server without snapshots for the tests that only read what it serves: a new client
    gets nothing written before it came, so each test sees only its own records."""
    return module_server_factory("map-no-snapshot", STREAM_SNAPSHOT="false")


async def settled(server):
    """``server`` once ready and with no stream open (the last test's have ended)."""
    await wait_ready(server)
    await wait_stats(server, lambda s: s["connections"] == 0)
    return server


async def test_vehicles_crossing_a_box_enter_and_leave_in_order_and_nothing_outside_arrives(
    unsnapshotted_server, broker
):
    """Simulated vehicles drive in and out of a box over the city; two more drive back and forth
    across the antimeridian. Each client sees exactly the positions inside its box and one
    leave per exit, in order."""
    server = await settled(unsnapshotted_server)
    topic = server.topic
    fleet = FleetSimulator(30, seed=7)
    start = 1_800_000_000.0
    records = [value for step in range(40) for _, value in fleet.step(start + 5 * step)]
    lat0, lon0 = QUERETARO
    city_box = (lon0 - 0.03, lat0 - 0.03, lon0 + 0.02, lat0 + 0.02)
    date_line_box = (179.5, -1.0, -179.5, 1.0)
    lons = [178.8, 179.2, 179.6, 180.0, -179.8, -179.4, -179.0, -179.4, -179.8, 179.9, 179.4, 179.0]
    records += [track_record("ship-1", n, 0.5, lon) for n, lon in enumerate(lons)]
    records += [track_record("ship-2", n, 2.0, lon) for n, lon in enumerate(lons)]  # north of the box
    city = expected_frames(records, city_box)
    date_line = expected_frames(records, date_line_box)
    assert any(kind == "leave" for kind, _, _ in city) and any(kind == "leave" for kind, _, _ in date_line)
    async with (
        ws_client(bbox_url(server, city_box)) as city_client,
        ws_client(bbox_url(server, date_line_box)) as ship_client,
    ):
        await wait_stats(server, lambda s: s["connections"] == 2)
        await produce(broker.bootstrap, topic, records)
        got_city = await collect(city_client, len(city), timeout=15.0)
        got_ships = await collect(ship_client, len(date_line), timeout=15.0)
        await assert_quiet(city_client)
        await assert_quiet(ship_client)
    assert [as_seen(f) for f in got_city] == [(k, d, None) for k, d, _ in city]
    assert [as_seen(f) for f in got_ships] == [(k, d, None) for k, d, _ in date_line]
    # Positions arrive byte for byte, as for any stream.
    city_texts = [text for kind, _, text in city if kind == "message"]
    assert [json.loads(t) for t in city_texts] == [f["data"] for f in got_city if f["event"] == "message"]


async def test_panning_acks_then_sends_new_positions_and_leaves_then_live_with_nothing_lost(make_server, broker, topic):
    server = make_server()
    await wait_ready(server)
    # stay: in both boxes; west: only in the first; east: only in the second.
    await produce(
        broker.bootstrap,
        topic,
        [
            track_record("west", 0, 10.0, 10.0),
            track_record("east", 0, 10.0, 12.5),
            track_record("stay", 0, 10.0, 11.5),
        ],
    )
    await wait_stats(server, lambda s: s["records"] >= 3)
    async with ws_client(bbox_url(server, (9.5, 9.5, 12, 10.5))) as client:
        snapshot = await collect(client, 2, timeout=15.0)
        assert sorted(as_seen(f)[1] for f in snapshot) == ["stay", "west"]
        live = [track_record("stay", n, 10.0, 11.5) for n in range(1, 21)]
        await produce(broker.bootstrap, topic, live[:10])
        before = await collect(client, 10, timeout=15.0)
        await client.send(json.dumps({"action": "subscribe", "bbox": [11, 9.5, 13, 10.5]}))
        await produce(broker.bootstrap, topic, live[10:])
        after = await collect(client, 13, timeout=15.0)
        await assert_quiet(client)
    assert after[0] == {
        "event": "ack",
        "data": {"action": "subscribe", "device_ids": None, "bbox": [11, 9.5, 13, 10.5]},
    }
    answer = [as_seen(f)[:2] for f in after[1:3]]
    assert answer == [("message", "east"), ("leave", "west")]
    stay = [
        f["data"]["data"]["SEQ"]
        for f in before + after
        if f["event"] == "message" and f["data"]["data"]["DEVICE_ID"] == "stay"
    ]
    assert stay == list(range(1, 21))


async def test_max_hz_1_on_a_device_reporting_at_10_hz_sends_10_or_11_frames_the_last_the_newest(
    make_server, broker, topic, alerts_topic
):
    server = make_server(KAFKA_ALERTS_TOPIC=alerts_topic, STREAM_SNAPSHOT="false")
    await wait_ready(server)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    await producer.start()
    try:
        async with ws_client(server.ws_url("/api/v1/stream?device_ids=fast-1&max_hz=1")) as client:
            await wait_stats(server, lambda s: s["connections"] == 1)
            frames: list[dict] = []

            async def read() -> None:
                while True:
                    frames.append(await client.next_frame(30))

            reader = asyncio.create_task(read())
            began = time.monotonic()
            for n in range(100):  # 10 Hz for 10 s, kept by the clock
                await asyncio.sleep(max(0.0, began + n / 10 - time.monotonic()))
                await producer.send(topic, track_record("fast-1", n, 1.0, 1.0))
                if n % 10 == 5:
                    await producer.send(alerts_topic, orjson.dumps({"data": {"DEVICE_ID": "fast-1", "ALERT": n}}))
            await producer.flush()
            await asyncio.sleep(2.0)  # the last slot frees within a second
            reader.cancel()
    finally:
        await producer.stop()
    positions = [f["data"]["data"]["SEQ"] for f in frames if f["event"] == "message"]
    alerts = [f["data"]["data"]["ALERT"] for f in frames if f["event"] == "alert"]
    assert len(positions) in (10, 11), positions
    assert positions[-1] == 99 and positions == sorted(positions)
    assert alerts == list(range(5, 100, 10))


def by_event(texts):
    """The frames' texts with the position message before the alert, whatever order they came in."""
    return sorted(texts, key=lambda text: json.loads(text)["event"] != "message")


async def test_fields_reduce_position_frames_byte_for_byte_and_leave_alerts_whole(
    make_server, broker, topic, alerts_topic
):
    server = make_server(KAFKA_ALERTS_TOPIC=alerts_topic, STREAM_SNAPSHOT="false")
    await wait_ready(server)
    fleet = FleetSimulator(2, seed=3)
    (device, value), _ = fleet.step(1_800_000_000.0)
    _, alert = fleet.alert(1_800_000_001.0, 0)
    url = server.ws_url(f"/api/v1/stream?device_ids={device}&fields=SPEED,LATITUD,LONGITUD,GPS_DATETIME")
    async with ws_client(url) as client, ws_client(url) as twin:
        await wait_stats(server, lambda s: s["connections"] == 2)
        # The alert first: order across topics is not promised either way, so take both frames
        # and put the message first.
        await produce(broker.bootstrap, alerts_topic, [alert])
        await produce(broker.bootstrap, topic, [value])
        texts = by_event([await client.connection.recv() for _ in range(2)])
        twin_texts = by_event([await twin.connection.recv() for _ in range(2)])
    data = json.loads(value)["data"]
    # Each frame keeps its record's cursor (its id), reduced or not.
    ids = [json.loads(text)["id"] for text in texts]
    assert texts[0] == (
        '{"event":"message","id":"' + ids[0] + '","data":{"data":{'
        f'"GPS_DATETIME":"{data["GPS_DATETIME"]}","LATITUD":"{data["LATITUD"]}","LONGITUD":"{data["LONGITUD"]}",'
        f'"SPEED":"{data["SPEED"]}","DEVICE_ID":"{device}"'
        "}}}"
    )
    assert texts[1] == '{"event":"alert","id":"' + ids[1] + '","data":' + alert.decode() + "}"
    assert twin_texts == texts
    assert len(texts[0]) < len(value) / 2


@pytest.fixture(scope="module")
def strict_server(module_server_factory):
    """One server for every bad option: each test only reads its answer. At most 2 fields;
    STREAM_MAX_HZ is its default, set here because max_hz=51 is refused by it."""
    return module_server_factory("bad-map-options", STREAM_MAX_FIELDS="2", STREAM_MAX_HZ="50")


@pytest.mark.parametrize(
    "query",
    [
        "bbox=1,2,3",
        "bbox=0,10,1,5",
        "bbox=-181,0,1,1",
        "bbox=a,b,c,d",
        "max_hz=0",
        "max_hz=-1",
        "max_hz=1e9",
        "max_hz=51",
        "max_hz=fast",
        "fields=",
        "fields=A,B,C",
        "fields=bad%20name",
    ],
)
async def test_bad_map_options_at_connect_get_an_error_frame_and_1008(strict_server, query):
    async with ws_client(strict_server.ws_url("/api/v1/stream?" + query)) as client:
        frame = await client.next_frame()
        assert frame["event"] == "error" and frame["data"]["message"]
        assert await client.wait_closed() == 1008


async def test_a_bad_box_in_a_subscribe_message_gets_an_error_frame_and_the_stream_stays(unsnapshotted_server, broker):
    server = await settled(unsnapshotted_server)
    topic = server.topic
    unplaced = stats(server)["unplaced_records"]
    async with ws_client(bbox_url(server, (0, 0, 1, 1))) as client, ws_client(server.ws_url()) as plain:
        await wait_stats(server, lambda s: s["connections"] == 2)
        for bad in ([0, 10, 1, 5], [0, 0, 1], "0,0,1,1,1", [200, 0, 201, 1], None):
            await client.send(json.dumps({"action": "subscribe", "bbox": bad}))
            frame = await client.next_frame()
            assert frame["event"] == "error" and "bbox" in frame["data"]["message"]
        await plain.send(json.dumps({"action": "subscribe", "bbox": [0, 0, 1, 1]}))
        assert (await plain.next_frame())["event"] == "error"
        await client.send(json.dumps({"action": "subscribe", "bbox": [2, 2, 3, 3]}))
        assert (await client.next_frame())["event"] == "ack"
        no_position = orjson.dumps({"data": {"DEVICE_ID": "nowhere", "SEQ": 1}})
        await produce(broker.bootstrap, topic, [track_record("here", 1, 2.5, 2.5), no_position])
        frame = await client.next_frame()
        assert frame["data"]["data"]["DEVICE_ID"] == "here"
        assert {(await plain.next_frame())["data"]["data"]["DEVICE_ID"] for _ in range(2)} == {"here", "nowhere"}
        await assert_quiet(client)
    assert stats(server)["unplaced_records"] >= unplaced + 1
