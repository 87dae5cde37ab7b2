"""The budgets of recovery end to end: a real broker, the app under Hypercorn, real clients.

A replay too far behind, or one that waited too long for its turn, opens with
``recovered: false``, a reason, then the snapshot and live; a cursor that names no partition is
malformed; a replay ends when its client leaves, and holds its connection slot until then.

A cursor ahead of the server (an offset past what it has read) keeps its replay running for the
catch-up wait (2 s) before it is answered: these tests use it to hold a turn for a known time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import psutil
from support import ws_client
from support.kafka import produce
from support.sse import sse_client
from support.status import stats, wait_ready, wait_stats
from websockets.exceptions import ConnectionClosed

from siscom.core import cursors


def value(device: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device, "SEQ": seq}}).encode()


def cursor_at(topic: str, offset: int) -> str:
    """The cursor of a client that has had every record of ``topic`` (one partition) before ``offset``."""
    return cursors.encode(cursors.topics_crc([topic]), ((offset,),))


def stream_url(server, query: str) -> str:
    return f"{server.url}/api/v1/stream?{query}"


async def test_a_resume_further_behind_than_the_budget_opens_unrecovered_then_gets_the_snapshot_and_live(
    make_server, broker, topic
):
    server = make_server(STREAM_REPLAY_MAX_RECORDS="10")
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(30)])
    await wait_stats(server, lambda s: s["records"] >= 30)
    far, near = cursor_at(topic, 5), cursor_at(topic, 24)  # 25 and 6 records behind
    url = server.ws_url("/api/v1/stream?device_ids=d0")
    async with ws_client(url + "&cursor=" + far) as client:
        opening = await client.next_frame()
        assert opening["event"] == "resumed" and opening["data"]["recovered"] is False, opening
        assert "25 records behind" in opening["data"]["reason"]
        assert "STREAM_REPLAY_MAX_RECORDS" in opening["data"]["reason"]
        snapshot = await client.next_frame()
        assert snapshot["data"]["data"]["SEQ"] == 29
        await produce(broker.bootstrap, topic, [value("d0", 30)])
        assert (await client.next_frame())["data"]["data"]["SEQ"] == 30
    async with ws_client(url + "&cursor=" + near) as client:
        assert await client.next_frame() == {"event": "resumed", "data": {"recovered": True}}
        assert [(await client.next_frame())["data"]["data"]["SEQ"] for _ in range(7)] == list(range(24, 31))
    async with sse_client(stream_url(server, "device_ids=d0"), {"Last-Event-ID": far}) as client:
        opening = await client.next_frame()
        assert opening["event"] == "resumed" and opening["data"]["recovered"] is False
        assert "STREAM_REPLAY_MAX_RECORDS" in opening["data"]["reason"]
        assert (await client.next_frame())["data"]["data"]["SEQ"] == 30
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["replay_cost_refusals"] == 2
    assert counters["resumes_not_recovered"] == 2 and counters["resumes_recovered"] == 1
    assert counters["history_reads_by_partition"] == {}, "nothing read for a refused resume"


async def test_a_cursor_that_names_no_partition_is_malformed(make_server, topic):
    server = make_server()
    await wait_ready(server)
    nowhere = cursors.encode(cursors.topics_crc([topic]), ((),))
    async with ws_client(server.ws_url(f"/api/v1/stream?cursor={nowhere}")) as client:
        frame = await client.next_frame()
        assert frame["event"] == "error" and "names no partition" in frame["data"]["message"]
        assert await client.wait_closed() == 1008
    async with sse_client(stream_url(server, "device_ids=d0"), {"Last-Event-ID": nowhere}) as client:
        body = json.loads(await client.read_body())
    assert client.status == 400 and "names no partition" in body["error"]
    counters = await wait_stats(server, lambda s: s["rejected_requests"] == 2)
    assert counters["connections_opened"] == 0


async def test_replays_past_the_concurrency_wait_their_turn_and_past_the_wait_bound_open_unrecovered(
    make_server, broker, topic
):
    server = make_server(STREAM_REPLAY_CONCURRENCY="1", STREAM_REPLAY_WAIT_SECONDS="3")
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", seq) for seq in range(10)])
    await wait_stats(server, lambda s: s["records"] >= 10)
    ahead = server.ws_url("/api/v1/stream?device_ids=d0&cursor=" + cursor_at(topic, 1000))
    resume = cursor_at(topic, 5)

    # One holds the only turn for about 2 s; the next waits for it, then recovers exactly.
    async with ws_client(ahead) as holder:
        await wait_stats(server, lambda s: s["replays_running"] == 1)
        async with sse_client(stream_url(server, "device_ids=d0"), {"Last-Event-ID": resume}) as waiter:
            await wait_stats(server, lambda s: s["replays_waiting"] == 1)
            assert await waiter.next_frame(6) == {"event": "resumed", "data": {"recovered": True}}
            assert [(await waiter.next_frame())["data"]["data"]["SEQ"] for _ in range(5)] == [5, 6, 7, 8, 9]
        assert (await holder.next_frame())["data"]["recovered"] is False
    assert stats(server)["replay_wait_refusals"] == 0

    # Two hold the turn for about 4 s in all: the third waits 3 s, then opens unrecovered.
    async with ws_client(ahead) as first, ws_client(ahead) as second:
        await wait_stats(server, lambda s: s["replays_running"] == 1 and s["replays_waiting"] == 1)
        async with ws_client(server.ws_url("/api/v1/stream?device_ids=d0&cursor=" + resume)) as late:
            opening = await late.next_frame(6)
            assert opening["event"] == "resumed" and opening["data"]["recovered"] is False, opening
            assert "too many replays" in opening["data"]["reason"]
            assert (await late.next_frame())["data"]["data"]["SEQ"] == 9  # the snapshot
        for client in (first, second):
            assert (await client.next_frame(6))["data"]["recovered"] is False
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["replay_wait_refusals"] == 1
    assert counters["replays_running"] == 0 and counters["replays_waiting"] == 0


async def test_a_replay_ends_when_its_client_leaves_and_holds_its_connection_slot_until_then(
    make_server, broker, topic
):
    server = make_server(STREAM_MAX_CONNECTIONS_PER_IP="4", STREAM_REPLAY_CONCURRENCY="100")
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", 0)])
    await wait_stats(server, lambda s: s["records"] >= 1)
    ahead = server.ws_url("/api/v1/stream?device_ids=d0&cursor=" + cursor_at(topic, 1000))
    for _ in range(3):  # dropped right after the handshake, while their replays wait to catch up
        async with ws_client(ahead) as a, ws_client(ahead) as b, ws_client(ahead) as c, ws_client(ahead) as d:
            await wait_stats(server, lambda s: s["replays_running"] == 4 and s["connection_slots"] == 4)
            loop = asyncio.get_running_loop()
            dropped = loop.time()
            for client in (a, b, c, d):
                client.connection.transport.abort()
        # The replays end with their clients, well before their 2 s catch-up; no slot is given
        # back while its replay still runs.
        async with asyncio.timeout(1.5):
            while True:
                counters = stats(server)
                assert counters["replays_running"] <= counters["connection_slots"], counters
                if counters["connection_slots"] == 0:
                    break
                await asyncio.sleep(0.02)
        assert counters["replays_running"] == 0
        assert loop.time() - dropped < 1.5
    counters = stats(server)
    assert counters["connection_limit_refusals"] == 0
    assert counters["resumes_not_recovered"] == 0, "none of them ran to its answer"


def server_rss(server) -> int:
    process = psutil.Process(server.pid)
    return process.memory_info().rss + sum(child.memory_info().rss for child in process.children(recursive=True))


async def test_what_a_client_sends_while_its_resume_waits_is_counted_and_bounded_as_later(make_server, broker, topic):
    server = make_server()
    await wait_ready(server)
    await produce(broker.bootstrap, topic, [value("d0", 0)])
    await wait_stats(server, lambda s: s["records"] >= 1)
    ahead = server.ws_url("/api/v1/stream?device_ids=d0&cursor=" + cursor_at(topic, 1000))  # waits 2 s
    big = json.dumps({"action": "subscribe", "device_ids": ["d1"], "pad": "x" * 60_000})
    before = server_rss(server)

    async def past_the_bound() -> tuple[list[dict], int | None]:
        """Three messages of 60 kB: the third goes past what is kept for the opening. Nothing
        more is sent, so none of the client's bytes is left unread when the server closes."""
        async with ws_client(ahead, compression=None) as client:
            for _ in range(3):
                await client.send(big)
            frames = []
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    frames.append(await client.next_frame(3))
            return frames, client.close_code

    for frames, code in await asyncio.gather(*(past_the_bound() for _ in range(4))):
        assert frames == [{"event": "error", "data": {"message": "too many messages"}}], frames
        assert code == 1008

    async def flood() -> int | None:
        """60 kB messages for 1.5 s, within the replay's wait. A server that closes a connection
        with bytes of it unread resets it, and the client may then lose the frames it had not
        read yet: 1006 is as good an end as 1008 here; what counts is that nothing was kept."""
        async with ws_client(ahead, compression=None) as client:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                async with asyncio.timeout(1.5):
                    while True:
                        await client.send(big)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    await client.next_frame(3)
            return client.close_code

    assert set(await asyncio.gather(*(flood() for _ in range(4)))) <= {1008, 1006}
    counters = await wait_stats(server, lambda s: s["connections"] == 0)
    assert counters["too_many_messages"] == 8
    assert server_rss(server) - before < 30 * 2**20, "what the waiting clients sent was not kept"

    # Over 64 KiB while waiting: 1009, as later.
    async with ws_client(ahead, compression=None) as client:
        await client.send(big + " " * 10_000)
        assert await client.wait_closed() == 1009
    # A message within the bounds waits for the opening, and is answered after what opens it.
    async with ws_client(ahead, compression=None) as client:
        await client.send(json.dumps({"action": "subscribe", "device_ids": ["d1"]}))
        opening = await client.next_frame(5)
        assert opening["event"] == "resumed" and opening["data"]["recovered"] is False
        assert (await client.next_frame())["data"]["data"]["SEQ"] == 0  # the snapshot
        assert await client.next_frame() == {
            "event": "ack",
            "data": {"action": "subscribe", "device_ids": ["d0", "d1"]},
        }
