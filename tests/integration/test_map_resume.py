"""Map streams resume too: ``cursor`` and ``since`` with ``bbox``, ``max_hz`` and ``fields``.

A real broker, the app under Hypercorn, real WebSocket clients. What a map client must get on
resuming (docs/protocol.md's contract): every alert of its devices that a live map would have got,
each device's newest position once, through its box, fields and rate, a ``leave`` for a device
whose newest position is out of the box; then live.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import orjson
import pytest
from support import ws_client
from support.kafka import produce
from support.status import stats, wait_ready, wait_stats

BOX = (-100.42, 20.63, -100.37, 20.67)
IN = (20.65, -100.40)
IN_TOO = (20.66, -100.38)
OUT = (20.70, -100.40)
FIELDS = ("LATITUD", "SEQ")


def record(device: str, seq: int, where: tuple[float, float]) -> bytes:
    lat, lon = where
    return orjson.dumps(
        {"data": {"DEVICE_ID": device, "SEQ": seq, "LATITUD": f"{lat:+.6f}", "LONGITUD": f"{lon:+.6f}", "SPEED": 40}}
    )


def alert(device: str, seq: int) -> bytes:
    return orjson.dumps({"data": {"DEVICE_ID": device, "SEQ": seq, "ALERT": "PANIC"}})


def query(**extra: str) -> str:
    bbox = ",".join(str(value) for value in BOX)
    parts = [f"bbox={bbox}", "max_hz=5", f"fields={','.join(FIELDS)}"] + [f"{k}={quote(v)}" for k, v in extra.items()]
    return "/api/v1/stream?" + "&".join(parts)


def seen(frame: dict) -> tuple:
    """A frame as (event, device, SEQ) (leave: no SEQ)."""
    if frame["event"] == "leave":
        return ("leave", frame["data"]["device_id"], None)
    data = frame["data"]["data"]
    return (frame["event"], data["DEVICE_ID"], data["SEQ"])


async def frames_until_quiet(client, quiet: float = 1.0) -> list[dict]:
    frames = []
    while True:
        try:
            frames.append(await client.next_frame(quiet))
        except TimeoutError:
            return frames


@pytest.mark.parametrize("window", ["50000", "2"], ids=["from the window", "from the log"])
async def test_a_map_stream_resumes_with_every_alert_in_its_box_and_each_devices_newest_position_then_live(
    make_server, broker, topic, alerts_topic, window
):
    server = make_server(KAFKA_ALERTS_TOPIC=alerts_topic, STREAM_SNAPSHOT="false", STREAM_REPLAY_WINDOW_RECORDS=window)
    await wait_ready(server)
    async with ws_client(server.ws_url(query(device_ids="a,b,c,d,e"))) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [record("a", 1, IN), record("b", 2, IN), record("c", 3, IN)])
        first = await frames_until_quiet(client)
    assert [seen(f) for f in first] == [("message", "a", 1), ("message", "b", 2), ("message", "c", 3)]
    cursor = [f["id"] for f in first if "id" in f][-1]
    await wait_stats(server, lambda s: s["connections"] == 0)
    # Away: a moves inside its box, b leaves it, c leaves and comes back, d enters, e stays out;
    # alerts of a (inside), e (outside) and b (once it has left).
    await produce(
        broker.bootstrap,
        topic,
        [
            record("a", 10, IN_TOO),
            record("b", 11, OUT),
            record("c", 12, OUT),
            record("d", 13, IN),
            record("e", 14, OUT),
            record("a", 15, IN),
            record("c", 16, IN_TOO),
        ],
    )
    await produce(broker.bootstrap, alerts_topic, [alert("a", 20), alert("e", 21), alert("b", 22)])
    await wait_stats(server, lambda s: s["records"] >= 13)
    ids = "a,b,c,d,e"
    async with ws_client(server.ws_url(query(cursor=cursor, device_ids=ids))) as client:
        assert await client.next_frame() == {"event": "resumed", "data": {"recovered": True}}
        replayed = await frames_until_quiet(client)
        await produce(broker.bootstrap, topic, [record("d", 30, IN_TOO)])
        live = await frames_until_quiet(client)
    assert sorted(seen(f) for f in replayed) == sorted(
        [
            ("message", "a", 15),
            ("leave", "b", None),
            ("message", "c", 16),
            ("message", "d", 13),
            ("leave", "e", None),
            ("alert", "a", 20),
        ]
    ), "a stream naming its devices gets a leave for each one out of its box"
    positions = [f for f in replayed if f["event"] == "message"]
    # The map's fields (and the device id), byte for byte as live frames carry them.
    assert all(sorted(f["data"]["data"]) == ["DEVICE_ID", "LATITUD", "SEQ"] for f in positions)
    (panic,) = [f for f in replayed if f["event"] == "alert"]
    assert json.loads(alert("a", 20)) == panic["data"], "alerts are sent whole"
    assert all("id" in f for f in replayed if f["event"] != "leave")
    assert [seen(f) for f in live] == [("message", "d", 30)]
    assert (stats(server)["history_reads_by_partition"] != {}) == (window == "2")


async def test_since_with_a_box_gives_the_newest_position_in_view_and_the_alerts_then_live(
    make_server, broker, topic, alerts_topic
):
    """A map opening "the last minute of what is in view, then live" on one socket."""
    server = make_server(KAFKA_ALERTS_TOPIC=alerts_topic, STREAM_SNAPSHOT="false")
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [record("old", 1, IN)])
    await wait_stats(server, lambda s: s["records"] >= 1)
    since = str(int(time.time() * 1000) + 50)
    time.sleep(0.2)
    await produce(
        broker.bootstrap,
        topic,
        [
            record("a", 2, IN),
            record("b", 7, IN),
            record("a", 3, IN_TOO),
            record("e", 4, OUT),
            record("b", 8, OUT),
        ],
    )
    await produce(broker.bootstrap, alerts_topic, [alert("a", 5), alert("e", 6)])
    await wait_stats(server, lambda s: s["records"] >= 8)
    async with ws_client(server.ws_url(query(since=since))) as client:
        assert await client.next_frame() == {"event": "resumed", "data": {"recovered": True}}
        replayed = await frames_until_quiet(client)
    assert sorted(seen(f) for f in replayed) == [("alert", "a", 5), ("leave", "b", None), ("message", "a", 3)], (
        "b was in the box earlier in the replay: a leave; e never was, in a stream of every device: none"
    )
