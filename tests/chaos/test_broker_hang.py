"""Scenario 2: the broker hangs (SIGSTOP) for many seconds, then runs on (SIGCONT).

A hung broker is worse than a dead one: connections stay open and requests go unanswered. The
gateway must keep its clients alive with keep-alives, say on ``/ready`` that it cannot stream,
and resume streaming once the broker runs again, without restarting the process.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from chaos.readiness import ReadyWatch
from chaos.traffic import FrameLog, Producer, position, sequences
from support import ws_client
from support.http import http_get_json
from support.status import stats

pytestmark = pytest.mark.chaos

TOPIC = "positions"
#: Several keep-alive intervals, and well past the 2 s after which /ready's probe of the broker
#: gives up (it turned 503 about 3 s into the hang on a loaded test machine).
HANG_SECONDS = 8.0
KEEPALIVE_SECONDS = 1.0


async def test_a_hung_broker_keeps_clients_alive_and_the_stream_resumes_when_it_runs_again(broker_and_server, scenario):
    scenario.title = "2. broker SIGSTOP, then SIGCONT"
    scenario.target = "keep-alives on; /ready 503 then 200; same process"
    broker, server = await broker_and_server(TOPIC, STREAM_KEEPALIVE_SECONDS=str(KEEPALIVE_SECONDS))
    pid = server.pid
    async with ws_client(server.ws_url()) as client, FrameLog(client) as log, ReadyWatch(server.url) as ready:
        async with Producer(broker.bootstrap) as producer:
            await producer.send(TOPIC, "car-1", position("car-1", 0))
        await log.wait_until(lambda seen: len(seen.data_frames()) == 1, 10, "the first record")

        broker.pause()
        paused = time.monotonic()
        not_ready_at, body = await ready.wait_for(503, paused, timeout=HANG_SECONDS)
        assert "unreachable" in body["reason"], body
        health, _ = await asyncio.to_thread(http_get_json, f"{server.url}/health")
        assert health == 200
        await asyncio.sleep(paused + HANG_SECONDS - time.monotonic())
        pings_while_hung = [at for at in log.pings() if at > paused]
        broker.resume()
        resumed = time.monotonic()

        async with Producer(broker.bootstrap) as producer:
            for n in range(1, 21):
                await producer.send(TOPIC, "car-1", position("car-1", n))
        await log.wait_until(lambda seen: len(seen.data_frames()) == 21, 20, "records after SIGCONT")
        first_after = min(at for at, _ in log.data_frames(0)[1:])
        ready_at, _ = await ready.wait_for(200, resumed, timeout=20)
        assert log.close_code is None

    assert sequences(log.data_frames(), "car-1") == list(range(21))
    assert server.pid == pid and server.running
    # A keep-alive at least every other interval while the broker was hung.
    assert len(pings_while_hung) >= HANG_SECONDS / KEEPALIVE_SECONDS / 2, pings_while_hung
    scenario.figure("broker hung for", f"{HANG_SECONDS:g} s")
    scenario.figure("keep-alives received while hung", f"{len(pings_while_hung)} (every {KEEPALIVE_SECONDS:g} s)")
    scenario.figure("/ready 503 after the hang began", f"{not_ready_at - paused:.1f} s ({body['reason'][:40]})")
    scenario.figure("/ready 200 after SIGCONT", f"{ready_at - resumed:.1f} s")
    scenario.figure("SIGCONT -> first new record delivered", f"{first_after - resumed:.2f} s")
    scenario.figure("records after SIGCONT delivered, in order", "20/20")
    scenario.figure(
        "process restarts / client disconnects", f"0 / 0 (reconnects: {stats(server)['broker_reconnects']})"
    )
