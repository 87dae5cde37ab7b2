"""A flooding client, for the security tests and the ``flood`` benchmark: an attacker, on purpose.

``python -m bench.flooder ws://127.0.0.1:8000/api/v1/stream --clients 3`` opens ``clients``
WebSocket connections on raw sockets and on each sends WebSocket pings (9,500 a second) and
subscribe messages of 1,000 device ids (1,480 a second), the floods that once took a gateway to
95 % CPU, without ever reading; when the server drops a connection it opens another at once.
``--pings`` and ``--messages`` change the rates (0: as fast as the server takes them). It runs
until SIGTERM or SIGINT, then prints one JSON line:
``{"connections": N, "bytes": B}``. Loopback addresses only: it refuses any other host.

It runs as its own process so that the flood's own CPU is not charged to whoever measures the
server beside it (a canary client in the same event loop would see its own loop's delays).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["control_frame", "masked_frame", "main"]

OP_TEXT, OP_PING = 0x1, 0x9


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client frame."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


def control_frame(opcode: int = OP_PING, payload: bytes = b"flood") -> bytes:
    return masked_frame(payload, opcode)


#: Seconds between two sends of one flooder.
TICK = 0.01
# Built once: masking in Python costs more than sending.
PING = control_frame()
SUBSCRIBE = masked_frame(
    json.dumps({"action": "subscribe", "device_ids": [f"flood-{n}" for n in range(1000)]}).encode()
)


@dataclass
class Tally:
    connections: int = 0
    bytes: int = 0


async def _connect(host: str, port: int, path: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(5):
            await loop.sock_connect(sock, (host, port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
    except BaseException:
        sock.close()
        raise
    return sock


async def _flood(host: str, port: int, path: str, tally: Tally, pings: float, messages: float) -> None:
    loop = asyncio.get_running_loop()
    # What one tick sends: the rates' share of a tick, or, unpaced, a batch as large as a burst.
    ticks = 1 / TICK
    burst = PING * (int(pings / ticks) if pings else 200) + SUBSCRIBE * (int(messages / ticks) if messages else 1)
    carry = (pings / ticks) % 1, (messages / ticks) % 1
    owed = [0.0, 0.0]
    while True:
        try:
            sock = await _connect(host, port, path)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        tally.connections += 1
        try:
            next_tick = loop.time()
            while True:
                data = burst
                owed = [owed[0] + carry[0], owed[1] + carry[1]]
                if owed[0] >= 1:
                    data, owed[0] = data + PING, owed[0] - 1
                if owed[1] >= 1:
                    data, owed[1] = data + SUBSCRIBE, owed[1] - 1
                await loop.sock_sendall(sock, data)
                tally.bytes += len(data)
                if pings or messages:
                    next_tick += TICK
                    await asyncio.sleep(max(0.0, next_tick - loop.time()))
                else:
                    await asyncio.sleep(0)  # the other flooders too
        except OSError:
            pass
        finally:
            sock.close()


async def run(url: str, clients: int, pings: float = 9500, messages: float = 1480) -> Tally:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"flood: {host} is not a loopback address")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(_flood(host, parts.port or 80, path, tally, pings, messages)) for _ in range(clients)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flooder", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="ws://127.0.0.1:PORT/api/v1/stream (loopback only)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--pings", type=float, default=9500, help="pings per second per client (0: unpaced)")
    parser.add_argument("--messages", type=float, default=1480, help="subscribe messages per second per client")
    args = parser.parse_args(argv)
    tally = asyncio.run(run(args.url, args.clients, args.pings, args.messages))
    print(json.dumps({"connections": tally.connections, "bytes": tally.bytes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
