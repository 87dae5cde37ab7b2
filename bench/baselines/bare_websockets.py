"""The bare broadcast server: the `websockets` library, one aiokafka task, nothing else.

The second baseline. Where the naive one shows what a first version on the same stack (Quart,
Hypercorn) does, this one shows what the fastest obvious Python server does: no framework, no
per-client queue or task, no conflation, no supervision. For each record the consumer task finds
the connections of its device and calls ``websockets.broadcast``, which writes the frame to each
of them at once, one write per frame per client, without waiting for anyone (a client whose
buffer is full has frames queued in its transport; nothing bounds them).

Run it as ``python -m bench.baselines.bare_websockets --bind 127.0.0.1:8002``; it reads
``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_TOPIC``, ``KAFKA_AUTO_OFFSET_RESET``,
``KAFKA_FETCH_MAX_WAIT_MS`` and ``STREAM_KEEPALIVE_SECONDS`` like the gateway does, and answers
``/ready`` and ``/stats`` for the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.baselines.kafka_read import consume

PING = '{"event":"ping","data":{"type":"keep-alive"}}'


class Hub:
    def __init__(self) -> None:
        self.by_device: dict[str, set[ServerConnection]] = {}
        self.everything: set[ServerConnection] = set()
        self.connections: set[ServerConnection] = set()
        self.records = 0
        self.assigned = 0

    def publish(self, device_id: str, frame: str) -> None:
        broadcast((*self.by_device.get(device_id, ()), *self.everything), frame)

    async def keep_alive(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            broadcast(self.connections, PING)

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # a handler runs once the handshake is read
        values = parse_qs(urlsplit(connection.request.path).query).get("device_ids")
        device_ids = [item for item in ",".join(values).split(",") if item] if values else None
        self.connections.add(connection)
        if device_ids is None:
            self.everything.add(connection)
        for device_id in device_ids or ():
            self.by_device.setdefault(device_id, set()).add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.connections.discard(connection)
            self.everything.discard(connection)
            for device_id in device_ids or ():
                self.by_device.get(device_id, set()).discard(connection)

    def http(self, connection: ServerConnection, request):
        path = urlsplit(request.path).path
        if path == "/ready":
            return connection.respond(HTTPStatus.OK if self.assigned else HTTPStatus.SERVICE_UNAVAILABLE, "ready\n")
        if path == "/stats":
            body = orjson.dumps({"records": self.records, "connections": len(self.connections)}).decode()
            response = connection.respond(HTTPStatus.OK, body)
            response.headers["Content-Type"] = "application/json"
            return response
        return None


async def main(bind: str) -> None:
    host, port = bind.rsplit(":", 1)
    hub = Hub()
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
    tasks = [
        asyncio.create_task(consume(hub)),
        asyncio.create_task(hub.keep_alive(float(os.environ.get("STREAM_KEEPALIVE_SECONDS", "60")))),
    ]
    # No library pings (the keep-alive frames are the application's), no compression unless asked.
    async with serve(hub.handler, host, int(port), process_request=hub.http, ping_interval=None, backlog=4096):
        with contextlib.suppress(asyncio.CancelledError):
            await stop
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8002")
    asyncio.run(main(parser.parse_args().bind))
