"""No session outlives its connection, and no connection outlives its session for long.

Two ways a stranger could hold the server's resources, tried over real sockets on loopback:

- a WebSocket handshake followed at once by bytes (here a single NUL) before the server accepted:
  Hypercorn answers 400 but never tells the app, so each such request used to leave a session
  counted, subscribed and holding a connection slot for good;
- clients that never read: closed with 1013 once their writes stall, but their TCP connections
  (and megabytes of kernel buffers each) used to stay established for as long as they liked.

Each test prints the figures it measured (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import psutil
from support import produce, ws_client
from support.status import stats, wait_ready, wait_stats

from siscom.config import Settings

DEVICE = "bus-1"


async def open_raw(server, payload: bytes, receive_buffer: int | None = None) -> socket.socket:
    """A client socket that sent ``payload`` and is then left alone (neither read nor closed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    await asyncio.get_running_loop().sock_sendall(sock, payload)
    return sock


def upgrade_request(server, path: str, origin: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Origin: {origin}\r\n" if origin else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def established(server) -> int:
    """The server process's established TCP connections on its listening port."""
    return sum(
        1
        for conn in psutil.Process(server.pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port == server.port
    )


async def wait_until(condition, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still not true after {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - started


async def test_bytes_before_the_accept_leave_no_session_and_normal_clients_still_get_in(make_server):
    server = make_server(STREAM_MAX_CONNECTIONS="50")
    await wait_ready(server)
    request = upgrade_request(server, f"/api/v1/stream?device_ids={DEVICE}") + b"\x00"
    attackers = [await open_raw(server, request) for _ in range(50)]
    try:
        loop = asyncio.get_running_loop()
        answers = [await asyncio.wait_for(loop.sock_recv(sock, 1024), 10) for sock in attackers]
        answered = time.monotonic()
        assert all(answer.startswith(b"HTTP/1.1 400") for answer in answers), answers[0]
        # None of them may hold a session or a connection slot, nor its socket on the server.
        settled = await wait_until(lambda: stats(server)["connections"] == 0, timeout=1.0)
        await wait_until(lambda: established(server) == 0, timeout=1.0)
        counters = stats(server)
        async with ws_client(server.ws_url(f"/api/v1/stream?device_ids={DEVICE}")) as client:
            opened = await wait_stats(server, lambda s: s["connections"] == 1, timeout=5)
            assert client.close_code is None
        print(
            f"\n50 handshakes + NUL vs STREAM_MAX_CONNECTIONS=50: each answered 400; connections 0 "
            f"{settled:.2f} s after the last answer, their server sockets closed "
            f"{time.monotonic() - answered:.2f} s after it at most; sessions opened "
            f"{counters['connections_opened']}, rejected_requests {counters['rejected_requests']}; "
            f"a normal client then got in (connections {opened['connections']})"
        )
    finally:
        for sock in attackers:
            sock.close()


async def test_bytes_before_an_origin_refusal_leave_no_server_socket_open(make_server):
    server = make_server(STREAM_ALLOWED_ORIGINS="https://dispatch.example")
    await wait_ready(server)
    request = upgrade_request(server, "/api/v1/stream", origin="https://elsewhere.example") + b"\x00"
    attackers = [await open_raw(server, request) for _ in range(20)]
    try:
        loop = asyncio.get_running_loop()
        answers = [await asyncio.wait_for(loop.sock_recv(sock, 1024), 10) for sock in attackers]
        assert all(answer.startswith(b"HTTP/1.1 400") for answer in answers), answers[0]
        gone_after = await wait_until(lambda: established(server) == 0, timeout=1.0)
        print(f"\n20 refused-origin handshakes + NUL: their server sockets closed {gone_after:.2f} s after the answers")
    finally:
        for sock in attackers:
            sock.close()


async def test_connections_of_clients_closed_for_not_reading_are_gone_within_the_linger(make_server, broker, topic):
    assert Settings().stream_close_linger_seconds <= 10  # the default bound
    linger = 2.0
    server = make_server(
        STREAM_MAX_CONNECTIONS="10",
        STREAM_SEND_TIMEOUT_SECONDS="1",
        STREAM_CLOSE_LINGER_SECONDS=str(linger),
        STREAM_SNAPSHOT="false",
    )
    await wait_ready(server)
    request = upgrade_request(server, f"/api/v1/stream?device_ids={DEVICE}")
    padding = "x" * 20_000
    readers: list[socket.socket] = []
    figures = []
    try:
        for wave in range(3):
            clients = [await open_raw(server, request, receive_buffer=4096) for _ in range(10)]
            readers += clients
            await wait_stats(server, lambda s: s["connections"] == 10, timeout=10)
            before = stats(server)["slow_client_closes"]
            # About 12 MB for each client, who reads none of it: every write stalls, and 1013.
            values = [
                json.dumps({"data": {"DEVICE_ID": DEVICE, "SEQ": n, "PAD": padding}}).encode()
                for n in range(wave * 600, wave * 600 + 600)
            ]
            await produce(broker.bootstrap, topic, values, key=DEVICE)
            closed = await wait_stats(
                server, lambda s: s["slow_client_closes"] == before + 10 and s["connections"] == 0, timeout=30
            )
            peak = established(server)
            gone_after = await wait_until(lambda: established(server) == 0, timeout=linger + 3.0, step=0.1)
            figures.append((wave + 1, closed["slow_client_closes"], peak, gone_after))
        process = psutil.Process(server.pid)
        fds = process.num_fds()
    finally:
        for sock in readers:
            sock.close()
    print(f"\nnon-reading clients, 3 waves of 10, STREAM_CLOSE_LINGER_SECONDS={linger:g}:")
    for wave, closes, peak, gone_after in figures:
        print(
            f"  wave {wave}: slow_client_closes {closes}; server sockets established at the end of "
            f"the sessions {peak}, none {gone_after:.2f} s later"
        )
    print(f"  server fds after the waves: {fds}")
    assert all(gone_after <= linger + 3.0 for *_, gone_after in figures)
