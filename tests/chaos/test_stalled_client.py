"""Scenario 5: a client completes the handshake, then never reads, beside clients that keep up.

Its TCP window fills, the server's writes to it stall. The promise: the other clients get every
record as fast as without it, the server's memory stays bounded, the stalled client's positions
are conflated, and past ``STREAM_SEND_TIMEOUT_SECONDS`` of stalling it is closed with 1013 and
counted. Its session ends even though its socket stays blocked; the close frame waits in the
socket behind the data it has not read, and it sees 1013 when it reads again within
``STREAM_CLOSE_LINGER_SECONDS`` (after that the connection is dropped: tests/security/).
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack

import pytest
from chaos.memory import RssSampler
from chaos.rawws import OP_PING, RawWebSocket, masked_frame
from chaos.traffic import FrameLog, Producer, percentile, position, record_of, sequences
from support import ws_client
from support.status import wait_stats

pytestmark = pytest.mark.chaos

TOPIC = "positions"
DEVICE = "hot-1"
FAST_CLIENTS = 2
#: Records of the run beside the stalled client: at about 1 KB each, enough to fill its buffers
#: and stall the server's writes to it for longer than SEND_TIMEOUT.
RECORDS = 15_000
#: Records of the run without it, which only gives the fast clients' latency to compare with.
BASELINE_RECORDS = 3_000
CHUNK = 15  # records per send, one send every CHUNK_INTERVAL: about 1,500 records/s
CHUNK_INTERVAL = 0.01
#: Makes a record about 1 KB, as a tracker's full report can be: the kernel buffers megabytes
#: for a socket, so a client only stalls the server's writes once that much is unread.
PADDING = "x" * 850
SEND_TIMEOUT = 4.0
#: These clients read again only after the run (many seconds after their 1013): the connection
#: must outlive their session that long (STREAM_CLOSE_LINGER_SECONDS, 5 s by default, drops it).
LINGER = "60"


async def produce_paced(bootstrap: str, first_seq: int, count: int) -> None:
    async with Producer(bootstrap) as producer:
        for start in range(first_seq, first_seq + count, CHUNK):
            began = time.monotonic()
            await producer.send_many(
                TOPIC, [(DEVICE, position(DEVICE, n, PAD=PADDING)) for n in range(start, start + CHUNK)]
            )
            await asyncio.sleep(max(0.0, CHUNK_INTERVAL - (time.monotonic() - began)))


def latencies(logs: list[FrameLog], first_seq: int) -> list[float]:
    """Seconds from send to arrival of every record of the run that began at ``first_seq``."""
    to_wall = time.time() - time.monotonic()
    return [
        at + to_wall - record_of(frame)["SENT"]
        for log in logs
        for at, frame in log.data_frames()
        if record_of(frame)["SEQ"] >= first_seq
    ]


async def run(bootstrap: str, logs: list[FrameLog], first_seq: int, count: int) -> list[float]:
    await produce_paced(bootstrap, first_seq, count)
    for log in logs:
        await log.wait_until(
            lambda seen: len(seen.data_frames()) >= first_seq + count, 60, f"all {first_seq + count} records"
        )
    return latencies(logs, first_seq)


async def test_a_client_that_never_reads_is_conflated_then_closed_while_others_keep_pace(broker_and_server, scenario):
    scenario.title = "5a. stalled client beside fast ones"
    scenario.target = "fast: all records; RSS < 30 MiB; 1013 + counted"
    broker, server = await broker_and_server(
        TOPIC, STREAM_SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT), STREAM_CLOSE_LINGER_SECONDS=LINGER, LOG_LEVEL="INFO"
    )
    url = server.ws_url(f"/api/v1/stream?device_ids={DEVICE}")
    async with AsyncExitStack() as stack:
        logs = []
        for _ in range(FAST_CLIENTS):
            client = await stack.enter_async_context(ws_client(url))
            logs.append(await stack.enter_async_context(FrameLog(client)))
        await wait_stats(server, lambda s: s["connections"] == FAST_CLIENTS)
        alone = await run(broker.bootstrap, logs, 0, BASELINE_RECORDS)

        stalled = await RawWebSocket.connect(url, receive_buffer=4096)
        stack.callback(stalled.close)
        before = await wait_stats(server, lambda s: s["connections"] == FAST_CLIENTS + 1)
        started = time.monotonic()
        with RssSampler(server.pid) as rss:
            beside = await run(broker.bootstrap, logs, BASELINE_RECORDS, RECORDS)
            after = await wait_stats(server, lambda s: s["slow_client_closes"] == 1, timeout=SEND_TIMEOUT + 10)
            closed_after = time.monotonic() - started
        await wait_stats(server, lambda s: s["connections"] == FAST_CLIENTS)
        code, texts = await stalled.read_until_close(timeout=30)
        for log in logs:
            assert log.close_code is None

    for log in logs:
        assert sequences(log.data_frames(), DEVICE) == list(range(BASELINE_RECORDS + RECORDS))
    seen = [json.loads(text)["data"]["data"]["SEQ"] for text in texts]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    conflated = after["conflated"] - before["conflated"]
    assert code == 1013
    assert conflated > 0
    assert rss.growth_mib < 30
    assert "Closing slow client" in server.log_text()
    scenario.figure(
        "records for its device",
        f"{BASELINE_RECORDS} without it, {RECORDS} beside it, ~{CHUNK / CHUNK_INTERVAL:,.0f}/s",
    )
    scenario.figure(
        "fast clients p50 / p99 without it",
        f"{percentile(alone, 0.5) * 1000:.0f} / {percentile(alone, 0.99) * 1000:.0f} ms",
    )
    scenario.figure(
        "fast clients p50 / p99 beside it",
        f"{percentile(beside, 0.5) * 1000:.0f} / {percentile(beside, 0.99) * 1000:.0f} ms",
    )
    scenario.figure("fast clients got every record, in order", f"{FAST_CLIENTS} x {BASELINE_RECORDS + RECORDS}")
    scenario.figure("server RSS growth while it stalled (peak)", f"{rss.growth_mib:.1f} MiB")
    scenario.figure("positions conflated for it", f"{conflated}")
    scenario.figure("closed, after the run began", f"{closed_after:.1f} s (bound: writes stalled {SEND_TIMEOUT:g} s)")
    scenario.figure("slow_client_closes", str(after["slow_client_closes"]))
    scenario.figure("it sees, once it reads again", f"{len(texts)} frames in order, then close {code}")


async def test_a_stalled_client_that_keeps_pinging_gets_its_1013_when_it_reads_again(broker_and_server, scenario):
    """Its pings make the server write pongs, which wait in its full socket while holding the
    server's lock on that socket: the close frame has to wait for the lock, not only for room."""
    scenario.title = "5b. stalled client that keeps pinging"
    scenario.target = "session ends while blocked; 1013 when it reads"
    broker, server = await broker_and_server(
        TOPIC, STREAM_SEND_TIMEOUT_SECONDS="2", STREAM_CLOSE_LINGER_SECONDS=LINGER, LOG_LEVEL="INFO"
    )
    stalled = await RawWebSocket.connect(server.ws_url(f"/api/v1/stream?device_ids={DEVICE}"), receive_buffer=4096)

    async def ping_forever() -> None:
        while True:
            await stalled.send(masked_frame(b"still here", OP_PING))
            await asyncio.sleep(0.1)

    pinging = asyncio.create_task(ping_forever())
    try:
        await wait_stats(server, lambda s: s["connections"] == 1)
        async with Producer(broker.bootstrap) as producer:
            for start in range(0, 8000, 200):
                await producer.send_many(
                    TOPIC, [(DEVICE, position(DEVICE, n, PAD="x" * 3000)) for n in range(start, start + 200)]
                )
        # The session ends, and its gauge drops, while the socket is still blocked.
        ended = await wait_stats(server, lambda s: s["slow_client_closes"] == 1 and s["connections"] == 0, timeout=30)
        await asyncio.sleep(1.0)
        pinging.cancel()
        await asyncio.wait((pinging,))
        code, texts = await stalled.read_until_close(timeout=30)
    finally:
        pinging.cancel()
        stalled.close()

    assert code == 1013
    assert ended["connections_closed"] == 1
    assert "waits behind unread data" in server.log_text()
    scenario.figure(
        "while blocked",
        f"session ended, counted: connections {ended['connections']}, slow_client_closes {ended['slow_client_closes']}",
    )
    scenario.figure("once it reads again", f"{len(texts)} frames, then close {code}")
