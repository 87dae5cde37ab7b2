"""Scenario 6: a burst of alerts for clients that have stopped reading.

Positions may be conflated for a client that falls behind, alerts never: a slow client gets every
alert, in order, once it reads again. Alerts are also what bounds its memory: past
``STREAM_MAX_PENDING_FRAMES`` alerts waiting, it is closed with 1013 and counted.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from chaos.rawws import RawWebSocket
from chaos.traffic import Producer, position
from support.status import wait_ready, wait_stats

from siscom.dev.broker import create_topics

pytestmark = pytest.mark.chaos

TOPIC, ALERTS = "positions", "alerts"
BOUND = 200  # STREAM_MAX_PENDING_FRAMES
WITHIN, BEYOND = 150, 400  # alerts in each burst
FLOOD = 6000  # 3 KB positions per device: far more than the kernel buffers for a socket
PADDING = "x" * 3000


async def flood(producer: Producer, device_id: str) -> None:
    for start in range(0, FLOOD, 200):
        await producer.send_many(
            TOPIC, [(device_id, position(device_id, n, PAD=PADDING)) for n in range(start, start + 200)]
        )


async def test_alerts_for_a_slow_client_are_never_conflated_and_past_the_bound_it_is_closed_1013(
    broker_factory, server_factory, scenario
):
    scenario.title = "6. alert burst, slow clients"
    scenario.target = f"every alert in order; > {BOUND} waiting: 1013"
    broker = broker_factory()
    await create_topics(broker.bootstrap, {TOPIC: 1, ALERTS: 1})
    server = server_factory(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": TOPIC,
            "KAFKA_ALERTS_TOPIC": ALERTS,
            "STREAM_MAX_PENDING_FRAMES": str(BOUND),
            "STREAM_SEND_TIMEOUT_SECONDS": "60",  # here only the alerts bound closes anyone
            "LOG_LEVEL": "INFO",
        }
    )
    await wait_ready(server)
    within = await RawWebSocket.connect(server.ws_url("/api/v1/stream?device_ids=truck-1"), receive_buffer=4096)
    beyond = await RawWebSocket.connect(server.ws_url("/api/v1/stream?device_ids=truck-2"), receive_buffer=4096)
    try:
        await wait_stats(server, lambda s: s["connections"] == 2)
        async with Producer(broker.bootstrap) as producer:
            await flood(producer, "truck-1")
            await flood(producer, "truck-2")
            await wait_stats(server, lambda s: s["records"] >= 2 * FLOOD)
            await asyncio.sleep(0.5)  # the sockets are full and the outboxes hold positions
            await producer.send_many(ALERTS, [("truck-1", position("truck-1", n, ALERT="SOS")) for n in range(WITHIN)])
            await producer.send_many(ALERTS, [("truck-2", position("truck-2", n, ALERT="SOS")) for n in range(BEYOND)])
        closed = await wait_stats(server, lambda s: s["slow_client_closes"] == 1 and s["connections"] == 1)

        # The slow client within the bound reads again: every alert, in order, and it stays open.
        alerts, positions = [], 0
        async with asyncio.timeout(30):
            while len(alerts) < WITHIN:
                _, payload = await within.read_frame()
                frame = json.loads(payload)
                if frame["event"] == "alert":
                    alerts.append(frame["data"]["data"]["SEQ"])
                elif frame["event"] == "message":
                    positions += 1
        code, texts = await beyond.read_until_close(timeout=30)
    finally:
        within.close()
        beyond.close()
    body = await wait_stats(server, lambda s: s["connections"] == 0)

    assert alerts == list(range(WITHIN))
    assert positions < FLOOD, "positions were not conflated"
    assert code == 1013
    alerts_beyond = [json.loads(t)["data"]["data"]["SEQ"] for t in texts if json.loads(t)["event"] == "alert"]
    assert alerts_beyond == list(range(len(alerts_beyond))), "alerts before the close were not a gap-free prefix"
    scenario.figure("within the bound: alerts received", f"{len(alerts)}/{WITHIN}, in order, no gap")
    scenario.figure("... positions received / produced", f"{positions}/{FLOOD} (conflated: {body['conflated']} in all)")
    scenario.figure("beyond the bound: close code", f"{code} after {len(alerts_beyond)} alerts (a gap-free prefix)")
    scenario.figure("slow_client_closes", str(closed["slow_client_closes"]))
