"""The commands an operator types: `siscom dev` (the demo) and plain Hypercorn."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ws_client
from support.http import http_get, http_get_json

from bench.http import http_status
from siscom.dev.processes import ChildProcess, free_port

HYPERCORN = str(Path(sys.executable).with_name("hypercorn"))


def answers_200(url: str) -> Callable[[], bool]:
    return lambda: http_status(url) == 200


def plain_hypercorn(spawn: Callable[..., ChildProcess], port: int) -> ChildProcess:
    """The app under plain Hypercorn on `port`, with a broker address where nothing listens."""
    return spawn(
        [HYPERCORN, "--bind", f"127.0.0.1:{port}", "siscom.app:create_app()"],
        answers_200(f"http://127.0.0.1:{port}/health"),
        name="hypercorn",
        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "KAFKA_TOPIC": "nowhere"},
    )


@pytest.mark.usefixtures("broker")  # only to require the tansu binary (fails under CI if missing)
async def test_siscom_dev_runs_broker_simulator_and_server_and_streams(spawn):
    port = free_port()
    dev = spawn(
        [sys.executable, "-m", "siscom", "dev", "--bind", f"127.0.0.1:{port}", "--rate", "50"],
        answers_200(f"http://127.0.0.1:{port}/ready"),
        name="dev",
    )
    status, page = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200 and b'<div id="map"' in page
    assert b'<meta name="siscom-map-tiles" content="https://tile.openstreetmap.org/{z}/{x}/{y}.png">' in page
    async with ws_client(f"ws://127.0.0.1:{port}/api/v1/stream?device_ids=0848086072") as client:
        frame = await client.frames_until(lambda f: f["event"] == "message", timeout=15)
    assert frame[-1]["data"]["data"]["DEVICE_ID"] == "0848086072"
    assert f"open http://127.0.0.1:{port}/" in dev.log_text()
    assert dev.stop(15) == 0


def test_the_app_can_be_served_by_plain_hypercorn(spawn):
    port = free_port()
    server = plain_hypercorn(spawn, port)
    status, body = http_get_json(f"http://127.0.0.1:{port}/ready")
    assert status == 503 and body["status"] == "not ready"
    assert server.stop(15) == 0


async def test_plain_hypercorn_closes_every_client_with_1001_promptly_on_sigterm(spawn):
    """Under plain Hypercorn the app gets no shutdown signal of its own: it must still tell
    clients 1001 at once, not let them be cut when Hypercorn's graceful timeout runs out."""
    port = free_port()
    server = plain_hypercorn(spawn, port)
    url = f"ws://127.0.0.1:{port}/api/v1/stream?device_ids=bus-1"
    async with ws_client(url) as first, ws_client(url) as second, ws_client(url) as third:
        clients = (first, second, third)
        for _ in range(100):
            if http_get_json(f"http://127.0.0.1:{port}/api/v1/stream/stats")[1]["connections"] == 3:
                break
            await asyncio.sleep(0.05)
        signalled = time.monotonic()
        # SIGTERM to Hypercorn's parent alone, as a service manager sends it; it stops its worker.
        stopped = asyncio.create_task(asyncio.to_thread(server.stop, 15))
        await asyncio.wait_for(asyncio.gather(*(c.connection.wait_closed() for c in clients)), 10)
        closed_after = time.monotonic() - signalled
        codes = [c.close_code for c in clients]
    print(f"\nplain hypercorn, SIGTERM -> 1001 to 3 clients in {closed_after:.2f} s")
    assert codes == [1001, 1001, 1001], server.log_tail()
    assert closed_after < 1.5, server.log_tail()
    assert await stopped == 0
