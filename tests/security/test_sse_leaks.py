"""No Server-Sent Events stream outlives its client: 2,000 of them come and go, and nothing stays.

An event stream learns that its client left only from the server (Hypercorn's ``http.disconnect``,
on which Quart cancels the route); nothing the client sends says so. Each of the 2,000 clients
here opens a stream, reads its head and its first event, then leaves, half with a clean close and
half with a TCP reset. The gateway runs in this test's event loop, so that its tasks, its live
objects and the memory it allocated can be counted before and after.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
import time
import tracemalloc

from chaos.inprocess import InProcessServer
from support.kafka import produce
from support.sse import open_sse
from support.status import wait_stats

from siscom.config import Settings
from siscom.sessions.session import Session
from siscom.web.server.sse_transport import SseTransport

CLIENTS = 2000
WAVE = 200
DEVICES = [f"sse-leak-{n}" for n in range(10)]
#: Allocated memory a client may leave behind, on average (a leaked session holds kilobytes).
BYTES_PER_CLIENT = 200


def _enough_file_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        assert hard >= needed, f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it to run this test"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _live(kind: type) -> int:
    return sum(1 for item in gc.get_objects() if type(item) is kind)


def _thaw_and_collect() -> None:
    """Free what is no longer referenced. The reclaimer freezes a crowd of open streams
    (siscom/sessions/reclaim.py), and what one that ended left stays frozen until its next
    thawing pass, which comes once enough streams have ended; frozen objects are out of
    ``gc.collect`` and ``gc.get_objects``. Thawed here, what remains is what is still referenced."""
    gc.unfreeze()
    gc.collect()


def _own(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])


async def _come_and_go(server: InProcessServer, count: int, clean: bool | None = None) -> None:
    """``count`` clients open a stream each, read the head and the first event; then leave."""
    clients = []
    for n in range(count):
        devices = ",".join(DEVICES[n % 10 : n % 10 + 2])
        clients.append(await open_sse(f"{server.url}/api/v1/stream?device_ids={devices}", timeout=30))
    await asyncio.gather(*(client.next_event(30) for client in clients))
    assert all(client.status == 200 for client in clients)
    for n, client in enumerate(clients):
        if clean if clean is not None else n % 2:
            await client.close()
        else:
            client.abort()


async def test_two_thousand_event_streams_leave_no_task_session_or_memory_behind(broker, topic, scenario):
    scenario.title = "SSE: 2,000 clients come and go"
    scenario.target = (
        "connections and subscriptions back to 0; no task, session or transport left; "
        f"< {BYTES_PER_CLIENT} B per client"
    )
    _enough_file_descriptors(3 * CLIENTS)
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10"}
    )
    async with InProcessServer(settings) as server:
        await produce(broker.bootstrap, topic, [json.dumps({"data": {"DEVICE_ID": d}}).encode() for d in DEVICES])
        await wait_stats(server, lambda s: s["devices_known"] >= len(DEVICES))  # snapshots to send
        await _come_and_go(server, WAVE)  # warm up: imports, caches, Hypercorn's and Quart's first use
        await wait_stats(server, lambda s: s["connections"] == 0)
        await asyncio.sleep(0.5)
        _thaw_and_collect()
        tasks_before = len(asyncio.all_tasks())
        # The test's log handlers keep every record (two per stream): that memory is the test's.
        logging.disable(logging.INFO)
        tracemalloc.start()
        try:
            before = _own(tracemalloc.take_snapshot())
            started = time.monotonic()
            for _ in range(CLIENTS // WAVE):
                await _come_and_go(server, WAVE)
            churn = time.monotonic() - started
            body = await wait_stats(
                server,
                lambda s: (
                    s["connections"] == 0 and s["devices_subscribed"] == 0 and s["connections_closed"] >= CLIENTS + WAVE
                ),
                timeout=30,
            )
            # Hypercorn finishes its side of each connection shortly after the session ended.
            deadline = time.monotonic() + 10
            while len(asyncio.all_tasks()) > tasks_before and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            tasks_after = len(asyncio.all_tasks())
            await asyncio.sleep(1.0)
            _thaw_and_collect()
            after = _own(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
            logging.disable(logging.NOTSET)
        # The session supervisor's loop holds its last message (the last child that exited) until
        # the next one: one session at most, whatever the number of clients.
        sessions, transports = _live(Session), _live(SseTransport)
        indexed = len(server.gateway.subscriptions)

    differences = after.compare_to(before, "lineno")
    growth = sum(stat.size_diff for stat in differences)
    largest = "\n".join(str(stat) for stat in differences[:8])
    scenario.figure("clients (half closed, half reset)", f"{CLIENTS} in waves of {WAVE}, {churn:.1f} s")
    scenario.figure("opened / closed", f"{body['connections_opened']} / {body['connections_closed']}")
    scenario.figure("asyncio tasks before / after", f"{tasks_before} / {tasks_after}")
    scenario.figure("sessions / SSE transports alive after", f"{sessions} / {transports}")
    scenario.figure("memory allocated after - before", f"{growth / 1024:.1f} KiB ({growth / CLIENTS:.0f} B per client)")
    assert body["connections_opened"] == body["connections_closed"] == CLIENTS + WAVE
    assert indexed == 0
    assert tasks_after <= tasks_before, f"{tasks_after - tasks_before} tasks more than before"
    assert sessions <= 1 and transports <= 1
    assert growth < BYTES_PER_CLIENT * CLIENTS, f"{growth} bytes more than before; largest:\n{largest}"
