"""What an ended stream leaves is freed within seconds, not whenever the collector's schedule says.

A connection's objects (session, stream core, outbox, Hypercorn's and h11's or wsproto's state,
asyncio's transport) are held in reference cycles: only the cyclic garbage collector frees them.
The serving process keeps that collector's passes rare, and under churn ended connections piled
up for minutes (issue: memory that does not come back). Here the collector's own schedule is
switched off, as if it never came in the time of the test, and 400 clients (WebSocket and
Server-Sent Events, each closing cleanly or resetting) come and go against a gateway in this
test's event loop: the reclaimer must have freed all but fewer than ``MIN_ENDED`` of their
sessions within a few seconds (before it, all 400 were still there).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time

from chaos.inprocess import InProcessServer
from chaos.rawws import RawWebSocket
from support.kafka import produce
from support.sse import open_sse
from support.status import wait_stats

from siscom.config import Settings
from siscom.sessions.reclaim import MIN_ENDED
from siscom.sessions.session import Session

DEVICES = [f"reclaim-{n}" for n in range(20)]
CLIENTS = 2 * MIN_ENDED
WAVE = 100


def _live_sessions() -> int:
    """Session objects not yet freed (``gc.get_objects`` lists them without collecting)."""
    return sum(1 for item in gc.get_objects() if type(item) is Session)


async def _client(server: InProcessServer, n: int) -> None:
    """One client: opens a stream of two devices, reads its first frame or event, leaves (a
    clean close or a reset, over WebSocket or SSE in turn)."""
    devices = ",".join(DEVICES[n % 10 : n % 10 + 2])
    if n % 2 == 0:
        ws = await RawWebSocket.connect(server.ws_url(f"/api/v1/stream?device_ids={devices}"), timeout=30)
        await asyncio.wait_for(ws.read_frame(), 30)
        ws.reset() if n % 4 == 0 else ws.close()
    else:
        sse = await open_sse(f"{server.url}/api/v1/stream?device_ids={devices}", timeout=30)
        await sse.next_event(30)
        if n % 4 == 1:
            sse.abort()
        else:
            await sse.close()


async def test_streams_that_ended_are_freed_within_seconds_without_the_collectors_own_schedule(broker, topic, scenario):
    scenario.title = "ended streams reclaimed"
    scenario.target = f"{CLIENTS} clients came and went: < {MIN_ENDED} sessions left unfreed after 5 s"
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10"}
    )
    async with InProcessServer(settings) as server:
        await produce(broker.bootstrap, topic, [json.dumps({"data": {"DEVICE_ID": d}}).encode() for d in DEVICES])
        await wait_stats(server, lambda s: s["devices_known"] >= len(DEVICES))
        gc.collect()
        gc.disable()
        try:
            before = _live_sessions()
            for first in range(0, CLIENTS, WAVE):
                await asyncio.gather(*(_client(server, n) for n in range(first, first + WAVE)))
            await wait_stats(server, lambda s: s["connections"] == 0 and s["connections_closed"] >= CLIENTS, timeout=30)
            ended_at = time.monotonic()
            left = _live_sessions() - before
            while left >= MIN_ENDED and time.monotonic() - ended_at < 5.0:
                await asyncio.sleep(0.2)
                left = _live_sessions() - before
            waited = time.monotonic() - ended_at
        finally:
            gc.enable()
    scenario.figure("sessions not freed after the last one ended", f"{left} of {CLIENTS} ({waited:.1f} s later)")
    assert left < MIN_ENDED, f"{left} of {CLIENTS} ended sessions still held {waited:.1f} s after the last ended"
