"""Every failure of the recovery path is an answer, not a crash (issue 21, item 6).

A resume that cannot read the log (the broker hangs under the read) gets ``recovered: false``
with a reason, then the snapshot, then live; a resume at the process's bound of subscribed ids
gets the same error frame and 1013 as a plain connect. Neither leaves a traceback in the log.
Real broker, the server as a process, real WebSocket clients.
"""

from __future__ import annotations

import json

from support import ws_client
from support.kafka import produce
from support.status import stats, wait_ready, wait_stats

from siscom.core import cursors
from siscom.dev.broker import create_topics

TOPIC = "positions"


def value(device: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq}}).encode()


def from_the_start(topic: str) -> str:
    """A cursor naming offset 0 of the topic's one partition: its replay reads the log."""
    return cursors.encode(cursors.topics_crc([topic]), ((0,),))


async def test_a_resume_whose_log_read_hangs_gets_recovered_false_then_the_snapshot_then_live(
    broker_factory, server_factory
):
    broker = broker_factory()
    await create_topics(broker.bootstrap, {TOPIC: 1})
    server = server_factory(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": TOPIC,
            "STREAM_REPLAY_WINDOW_RECORDS": "5",
        }
    )
    await wait_ready(server)
    await produce(broker.bootstrap, TOPIC, [value("d0", seq) for seq in range(20)])
    await wait_stats(server, lambda s: s["records"] >= 20)
    url = server.ws_url(f"/api/v1/stream?device_ids=d0&cursor={from_the_start(TOPIC)}")
    # A first resume connects the log reader: the next one asks a broker it is connected to.
    async with ws_client(url) as client:
        assert await client.next_frame(10) == {"event": "resumed", "data": {"recovered": True}}
        assert [(await client.next_frame())["data"]["data"]["SEQ"] for _ in range(20)] == list(range(20))
    broker.pause()
    try:
        async with ws_client(url) as client:
            opening = await client.next_frame(20)  # the reader's round gives up after 10 s
            assert opening["event"] == "resumed" and opening["data"]["recovered"] is False, opening
            assert opening["data"]["reason"] == "the log cannot be read now"
            snapshot = await client.next_frame(5)
            assert snapshot["event"] == "message" and snapshot["data"]["data"]["SEQ"] == 19 and "id" in snapshot
            broker.resume()
            await produce(broker.bootstrap, TOPIC, [value("d0", 20)])
            live = await client.next_frame(30)
            assert live["event"] == "message" and live["data"]["data"]["SEQ"] == 20
    finally:
        broker.resume()
    counters = stats(server)
    assert counters["resumes_not_recovered"] == 1 and counters["resumes_recovered"] == 1
    assert "Traceback" not in server.log_text(), server.log_tail()


async def test_a_resume_from_the_log_at_the_subscription_bound_gets_an_error_frame_and_1013(make_server, broker, topic):
    server = make_server(STREAM_MAX_SUBSCRIBED_IDS=2, STREAM_REPLAY_WINDOW_RECORDS=5)
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(20)])
    await wait_stats(server, lambda s: s["records"] >= 20)
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=d1,d2")):
        await wait_stats(server, lambda s: s["connections"] == 1)
        answers = []
        for query in ("device_ids=d0", f"device_ids=d0&cursor={from_the_start(topic)}"):
            async with ws_client(server.ws_url(f"/api/v1/stream?{query}")) as client:
                answers.append((await client.next_frame(10), await client.wait_closed()))
    plain, replayed = answers
    assert plain == ({"event": "error", "data": {"message": "server at its subscription limit"}}, 1013)
    assert replayed == plain
    counters = stats(server)
    assert counters["subscription_limit_refusals"] == 2
    assert "Traceback" not in server.log_text(), server.log_tail()
