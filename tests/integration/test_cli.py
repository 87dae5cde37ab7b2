"""The commands an operator types: `siscom dev` (the demo) and plain Hypercorn."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siscom.dev.broker import free_port
from siscom.dev.processes import terminate
from support import ws_client
from support.http import http_get, http_get_json
from support.server import REPO_ROOT


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    base.update({"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}, **(env or {}))
    return subprocess.Popen(command, env=base, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not 200 within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> int:
    return terminate(process, timeout=15)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        stop(process)


@pytest.mark.usefixtures("broker")  # only to require the tansu binary (fails under CI if missing)
async def test_siscom_dev_runs_broker_simulator_and_server_and_streams(tmp_path, processes):
    port = free_port()
    log = tmp_path / "dev.log"
    dev = spawn([sys.executable, "-m", "siscom", "dev", "--bind", f"127.0.0.1:{port}", "--rate", "50"], log)
    processes.append(dev)
    wait_http(f"http://127.0.0.1:{port}/ready", dev, log)
    status, page = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200 and b'<div id="map"' in page
    assert b'<meta name="siscom-map-tiles" content="https://tile.openstreetmap.org/{z}/{x}/{y}.png">' in page
    async with ws_client(f"ws://127.0.0.1:{port}/api/v1/stream?device_ids=0848086072") as client:
        frame = await client.frames_until(lambda f: f["event"] == "message", timeout=15)
    assert frame[-1]["data"]["data"]["DEVICE_ID"] == "0848086072"
    assert f"open http://127.0.0.1:{port}/" in log.read_text()
    assert stop(dev) == 0


def test_the_app_can_be_served_by_plain_hypercorn(tmp_path, processes):
    port = free_port()
    log = tmp_path / "hypercorn.log"
    hypercorn = Path(sys.executable).with_name("hypercorn")
    server = spawn(
        [str(hypercorn), "--bind", f"127.0.0.1:{port}", "siscom.app:create_app()"],
        log,
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "KAFKA_TOPIC": "nowhere"},
    )
    processes.append(server)
    wait_http(f"http://127.0.0.1:{port}/health", server, log)
    status, body = http_get_json(f"http://127.0.0.1:{port}/ready")
    assert status == 503 and body["status"] == "not ready"
    assert stop(server) == 0


async def test_plain_hypercorn_closes_every_client_with_1001_promptly_on_sigterm(tmp_path, processes):
    """Under plain Hypercorn the app gets no shutdown signal of its own: it must still tell
    clients 1001 at once, not let them be cut when Hypercorn's graceful timeout runs out."""
    port = free_port()
    log = tmp_path / "hypercorn.log"
    hypercorn = Path(sys.executable).with_name("hypercorn")
    server = spawn(
        [str(hypercorn), "--bind", f"127.0.0.1:{port}", "siscom.app:create_app()"],
        log,
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "KAFKA_TOPIC": "nowhere"},
    )
    processes.append(server)
    wait_http(f"http://127.0.0.1:{port}/health", server, log)
    url = f"ws://127.0.0.1:{port}/api/v1/stream?device_ids=bus-1"
    async with ws_client(url) as first, ws_client(url) as second, ws_client(url) as third:
        clients = (first, second, third)
        for _ in range(100):
            if http_get_json(f"http://127.0.0.1:{port}/api/v1/stream/stats")[1]["connections"] == 3:
                break
            await asyncio.sleep(0.05)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(c.connection.wait_closed() for c in clients)), 10)
        closed_after = time.monotonic() - signalled
        codes = [c.close_code for c in clients]
    print(f"\nplain hypercorn, SIGTERM -> 1001 to 3 clients in {closed_after:.2f} s")
    assert codes == [1001, 1001, 1001], log.read_text()[-3000:]
    assert closed_after < 1.5, log.read_text()[-3000:]
    assert stop(server) == 0
