"""Event-stream clients that send something after their request and then leave.

Bytes behind a request make Hypercorn stop reading the connection until the response ends, so a
client that pipelined a request and then closed (FIN) or reset its side went unseen: its stream
and connection slot stayed for one to three keep-alive intervals, and with every slot held so,
every new client got 503. Here every slot is taken by such clients, each kind of them, over raw
sockets; the slots must all be free again within a couple of seconds, with the keep-alive a minute
away, and a pipelined request behind a stream that stays must never be answered.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from support import ServerProcess
from support.sse import open_sse
from support.status import stats, wait_ready

from bench.eventstream import take_head

SLOTS = 12
#: Time to see the leaving, with a keep-alive of 60 s: the issue's bound is "a second or two".
FREED_WITHIN_SECONDS = 2.5


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    server = module_server_factory(
        "sse-pipelining",
        STREAM_MAX_CONNECTIONS=str(SLOTS),
        STREAM_MAX_CONNECTIONS_PER_IP=str(SLOTS),
        STREAM_KEEPALIVE_SECONDS="60",
    )
    asyncio.run(wait_ready(server))
    yield server
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def request(server: ServerProcess, path: str = "/api/v1/stream") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nAccept: text/event-stream\r\n\r\n".encode()


def read_head(sock: socket.socket) -> bytes:
    """Read until the response head is whole; what came (the head and any body bytes)."""
    buffer = bytearray()
    deadline = time.monotonic() + 5
    while take_head(bytearray(buffer)) is None and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head: {bytes(buffer)!r}"
        buffer += chunk
    return bytes(buffer)


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def same_segment_then_fin(server: ServerProcess, sock: socket.socket) -> None:
    """The stream's request and a second request in one write, then a FIN once streaming."""
    sock.sendall(request(server) + request(server, "/health"))
    assert b" 200 " in read_head(sock)[:20]
    sock.shutdown(socket.SHUT_WR)


def later_then_close(server: ServerProcess, sock: socket.socket) -> None:
    """The request; once streaming, a pipelined request; then close (FIN)."""
    sock.sendall(request(server))
    assert b" 200 " in read_head(sock)[:20]
    sock.sendall(request(server, "/health"))
    time.sleep(0.05)
    sock.close()


def later_then_reset(server: ServerProcess, sock: socket.socket) -> None:
    sock.sendall(request(server))
    assert b" 200 " in read_head(sock)[:20]
    sock.sendall(b"\x00junk that is no request\r\n\r\n")
    time.sleep(0.05)
    reset(sock)


def a_lot_then_fin(server: ServerProcess, sock: socket.socket) -> None:
    """More behind the request than the asyncio reader buffers before it stops reading."""
    sock.sendall(request(server))
    assert b" 200 " in read_head(sock)[:20]
    sock.sendall(request(server, "/health") * 8000)  # about 600 KB
    sock.shutdown(socket.SHUT_WR)


LEAVERS = [same_segment_then_fin, later_then_close, later_then_reset, a_lot_then_fin]


def connections(server: ServerProcess) -> int:
    return stats(server)["connections"]


@pytest.mark.parametrize("leave", LEAVERS, ids=lambda leave: leave.__name__)
def test_clients_that_send_behind_their_stream_and_leave_free_every_slot_within_seconds(server, leave):
    assert connections(server) == 0
    sockets = []
    try:
        for _ in range(SLOTS):
            sock = socket.create_connection((server.host, server.port), timeout=5)
            sockets.append(sock)
            leave(server, sock)
        left = time.monotonic()
        while connections(server) and time.monotonic() - left < 10:
            time.sleep(0.05)
        freed_after = time.monotonic() - left
        assert connections(server) == 0, "slots still held 10 s after every client left"
        assert freed_after <= FREED_WITHIN_SECONDS, f"the slots came back after {freed_after:.1f} s"
    finally:
        for sock in sockets:
            sock.close()
    status, _ = asyncio.run(probe(server))
    assert status == 200, "a new client is refused after the ghosts"


async def probe(server: ServerProcess) -> tuple[int, bytes]:
    client = await open_sse(f"{server.url}/api/v1/stream")
    try:
        return client.status, bytes(client.body)
    finally:
        client.writer.close()


def test_a_request_pipelined_behind_a_stream_that_stays_is_never_answered_on_it(server):
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request(server) + request(server, "/health"))
        received = bytearray(read_head(sock))
        sock.sendall(request(server, "/health"))
        sock.settimeout(0.2)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        assert received.count(b"HTTP/1.1") == 1, bytes(received)
        assert connections(server) == 1, "the stream goes on"
