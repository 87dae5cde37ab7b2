"""StatsD metrics, received by a real UDP listener after a known workload."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from support.kafka import produce
from support.statsd import StatsdListener
from support.status import stats, wait_ready, wait_stats
from support.workload import KNOWN_TOTALS, run_known_workload
from websockets.asyncio.client import connect

from siscom.metrics import Kind, Metric

PREFIX = "fleet.gw"


def record(device_id: str, seq: int, pad: int = 0) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}, "pad": "x" * pad}).encode()


def metric(name: str) -> str:
    return f"{PREFIX}.{name}"


@pytest.fixture
async def statsd():
    async with StatsdListener() as listener:
        yield listener


def statsd_env(listener: StatsdListener, **settings: str) -> dict[str, str]:
    return {"STATSD_HOST": listener.host, "STATSD_PORT": str(listener.port), "STATSD_PREFIX": PREFIX, **settings}


async def test_counters_gauges_and_timers_after_a_known_workload(make_server, broker, topic, alerts_topic, statsd):
    server = make_server(statsd_env(statsd, KAFKA_ALERTS_TOPIC=alerts_topic))
    await wait_ready(server)
    # A record stamped five seconds ago: the latency timer measures from the record's timestamp.
    await run_known_workload(server, broker.bootstrap, topic, alerts_topic, stamped_seconds_ago=5)
    await statsd.wait_for(
        lambda seen: seen.counter(metric("connections_closed")) == 2 and seen.gauge(metric("partition_lag")) == 0
    )

    for name, value in KNOWN_TOTALS.items():
        assert statsd.counter(metric(name)) == value, name
    # StatsD got the same totals as the stats endpoint, for every counter.
    totals = stats(server)
    for name in (m for m in Metric if m.kind is Kind.COUNTER):
        assert statsd.counter(metric(name)) == totals[name], name

    assert max(statsd.gauge_values(metric("connections"))) == 2
    assert statsd.gauge(metric("connections")) == 0
    assert statsd.gauge(metric("partition_lag")) == 0
    latencies = statsd.timings(metric("latency"))
    assert latencies and all(0 <= ms < 30_000 for ms in latencies)
    assert any(5000 <= ms < 30_000 for ms in latencies)
    assert all(name.startswith(PREFIX + ".") for name in statsd.names())


def stalling_socket(server) -> socket.socket:
    """A client socket with a tiny receive buffer: once it stops reading, the server's writes stall."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    return sock


async def test_conflated_positions_and_slow_client_closes_are_counted(make_server, broker, topic, statsd):
    server = make_server(statsd_env(statsd, STREAM_MAX_PENDING_FRAMES="5", STREAM_SEND_TIMEOUT_SECONDS="1.5"))
    await wait_ready(server)
    positions, big = 40, 50
    stuck_ids = [f"stuck-{n}" for n in range(big)]
    behind = connect(server.ws_url("/api/v1/stream?device_ids=behind"), max_size=None)
    stuck = connect(
        server.ws_url("/api/v1/stream?device_ids=" + ",".join(stuck_ids)),
        sock=stalling_socket(server),
        max_queue=1,
        max_size=None,
        close_timeout=0.5,
        compression=None,  # nothing may shrink the data
    )
    async with stuck:
        async with behind as lagging:
            await wait_stats(server, lambda s: s["connections"] == 2)
            # Forty positions of one device arrive in one batch, more than the five a client
            # may have waiting: it gets the newest, and the ones it skipped are counted.
            await produce(broker.bootstrap, topic, [record("behind", n) for n in range(positions)])
            received = []
            while not received or received[-1] != positions - 1:
                frame = json.loads(await asyncio.wait_for(lagging.recv(), 10))
                received.append(frame["data"]["data"]["SEQ"])
        await statsd.wait_for(lambda seen: seen.gauge(metric("connections")) == 1)
        # Large records of many devices (nothing to conflate) for a client that never reads:
        # once the socket buffers are full its writes stall, and past the send timeout the
        # server closes it and counts it.
        await produce(broker.bootstrap, topic, [record(device, 0, pad=150_000) for device in stuck_ids])
        await wait_stats(server, lambda s: s["slow_client_closes"] == 1, timeout=15)
        await statsd.wait_for(lambda seen: seen.gauge(metric("connections")) == 0)
    await statsd.wait_for(lambda seen: seen.counter(metric("slow_client_closes")) == 1)
    assert received == sorted(received) and len(received) < positions
    await statsd.wait_for(lambda seen: seen.counter(metric("conflated")) >= positions - len(received))
    assert statsd.counter(metric("conflated")) == positions - len(received)
