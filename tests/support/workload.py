"""One known workload through a real server, for the tests that check what metrics count.

Two clients (one of ``dev-a``, one of every device) and one refused request (a bad device id);
4 positions of ``dev-a``, one malformed record, 6 of ``dev-b``, 2 alerts; then one more position
whose Kafka timestamp lies in the past, so the latency measured from it is known to be at least
that old. The counters it must leave are :data:`KNOWN_TOTALS`, whatever reports them (StatsD,
``/metrics``, the stats endpoint).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from .kafka import produce
from .server import ServerProcess
from .status import wait_stats
from .ws import ws_client

KNOWN_TOTALS = {
    "records": 4 + 1 + 6 + 2 + 1,
    "alerts": 2,
    "malformed_records": 1,
    "frames_sent": 5 + 12 + 1,
    "connections_opened": 2,  # sessions; the refused request never became one
    "connections_closed": 2,
    "rejected_requests": 1,
}


def record(device_id: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}}).encode()


async def run_known_workload(
    server: ServerProcess,
    bootstrap: str,
    topic: str,
    alerts_topic: str,
    *,
    stamped_seconds_ago: float,
    while_connected: Callable[[], None] = lambda: None,
) -> None:
    """Run the workload; `while_connected` is called once both clients are counted.

    The server must read `alerts_topic` as its alerts topic. Returns once both clients are gone.
    """
    async with ws_client(server.ws_url("/api/v1/stream?device_ids=dev-a")) as one, ws_client(server.ws_url()) as every:
        await wait_stats(server, lambda s: s["connections"] == 2)
        while_connected()
        async with ws_client(server.ws_url("/api/v1/stream?device_ids=bad%20id")) as refused:
            assert await refused.wait_closed() == 1008
        await produce(
            bootstrap,
            topic,
            [*(record("dev-a", n) for n in range(4)), b"{not json", *(record("dev-b", n) for n in range(6))],
        )
        await produce(bootstrap, alerts_topic, [record("dev-a", 100), record("dev-b", 101)])
        assert len([await one.next_frame() for _ in range(4 + 1)]) == 5
        assert len([await every.next_frame() for _ in range(10 + 2)]) == 12
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            stamped = int((time.time() - stamped_seconds_ago) * 1000)
            await producer.send_and_wait(topic, record("dev-b", 6), timestamp_ms=stamped)
        finally:
            await producer.stop()
        await every.next_frame()
    await wait_stats(server, lambda s: s["connections"] == 0)
