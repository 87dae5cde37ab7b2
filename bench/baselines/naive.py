"""The naive fan-out: what a competent first version of this service looks like.

The benchmark reports every figure of the gateway as a ratio to this server, run under the same
harness on the same machine in the same invocation, because ratios hold on a noisy machine and
absolute numbers do not.

It does the obvious right things and nothing more: one aiokafka consumer task that reads every
partition in batches, each record parsed once and framed once, a device index to find the
interested clients, a bounded queue per client (a full queue drops the new frame), and one task
per client that awaits ``websocket.send(frame)`` for each frame through Quart's websocket object.
Keep-alives go through the same queue. There is no supervision, no conflation and no snapshot.

Run it as ``python -m bench.baselines.naive --bind 127.0.0.1:8001``; it reads
``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_TOPIC``, ``KAFKA_AUTO_OFFSET_RESET``,
``KAFKA_FETCH_MAX_WAIT_MS`` and ``STREAM_KEEPALIVE_SECONDS`` like the gateway does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, websocket

from bench.baselines.kafka_read import consume

QUEUE_SIZE = 1000
PING = '{"event":"ping","data":{"type":"keep-alive"}}'


class Hub:
    """Who wants which device, and the consumer that feeds them."""

    def __init__(self) -> None:
        self.by_device: dict[str, set[asyncio.Queue[str]]] = {}
        self.everything: set[asyncio.Queue[str]] = set()
        self.records = 0
        self.dropped = 0
        self.assigned = 0

    def add(self, queue: asyncio.Queue[str], device_ids: list[str] | None) -> None:
        if device_ids is None:
            self.everything.add(queue)
        for device_id in device_ids or ():
            self.by_device.setdefault(device_id, set()).add(queue)

    def remove(self, queue: asyncio.Queue[str], device_ids: list[str] | None) -> None:
        self.everything.discard(queue)
        for device_id in device_ids or ():
            self.by_device.get(device_id, set()).discard(queue)

    def publish(self, device_id: str, frame: str) -> None:
        for queue in (*self.by_device.get(device_id, ()), *self.everything):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.dropped += 1


def create_app(hub: Hub, keepalive: float) -> Quart:
    app = Quart(__name__)
    consumer: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start() -> None:
        consumer.append(asyncio.create_task(consume(hub)))

    @app.after_serving
    async def stop() -> None:
        for task in consumer:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        return {"assigned_partitions": hub.assigned}, (200 if hub.assigned else 503)

    @app.get("/stats")
    async def stats():
        connections = len({q for qs in hub.by_device.values() for q in qs} | hub.everything)
        return {"records": hub.records, "dropped": hub.dropped, "connections": connections}

    @app.websocket("/api/v1/stream")
    async def stream() -> None:
        raw = websocket.args.get("device_ids")
        device_ids = [item for item in raw.split(",") if item] if raw else None
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        hub.add(queue, device_ids)

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(keepalive)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(PING)

        pinger = asyncio.create_task(keep_alive())
        try:
            await websocket.accept()
            while True:
                frame = await queue.get()
                await websocket.send(frame)
        finally:
            pinger.cancel()
            hub.remove(queue, device_ids)

    return app


async def main(bind: str) -> None:
    hub = Hub()
    app = create_app(hub, float(os.environ.get("STREAM_KEEPALIVE_SECONDS", "60")))
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8001")
    asyncio.run(main(parser.parse_args().bind))
