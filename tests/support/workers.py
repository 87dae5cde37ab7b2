"""A server of two worker processes behind one port, and clients spread over both."""

from __future__ import annotations

import asyncio
import contextlib

import psutil

from .server import ServerProcess
from .ws import WSClient, ws_client


def start_two_workers(server_factory, bootstrap: str, topic: str) -> ServerProcess:
    """``siscom serve --workers 2`` on ``topic``, every record live: "earliest" without warm-up,
    so a worker whose consumer starts after the records were written still reads them."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_AUTO_OFFSET_RESET": "earliest",
        "STREAM_SNAPSHOT_LOOKBACK_SECONDS": "0",
    }
    server = server_factory(env, args=["--workers", "2"])
    assert len(psutil.Process(server.pid).children()) == 2
    return server


def workers_by_client_count(server: ServerProcess) -> dict[int, int]:
    """Worker pid -> established connections it holds on the server's port."""
    counts = {}
    for worker in psutil.Process(server.pid).children():
        connections = worker.net_connections(kind="tcp")
        counts[worker.pid] = sum(
            c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port for c in connections
        )
    return counts


async def clients_on_both(stack: contextlib.AsyncExitStack, server: ServerProcess) -> list[WSClient]:
    """Open clients (closed with ``stack``) until each worker holds some, at least four in all.

    The kernel hands each connection to whichever worker accepts first, and a worker accepts once
    its gateway runs: bounded, then asserted."""
    clients = []
    for _ in range(100):
        clients.append(await stack.enter_async_context(ws_client(server.ws_url())))
        if len(clients) >= 4 and all(workers_by_client_count(server).values()):
            break
        await asyncio.sleep(0.1)
    assert all(workers_by_client_count(server).values()), workers_by_client_count(server)
    return clients
