"""The fan-out path in-process: CPU per delivery from a routed batch to the sockets, beside a bare
broadcast, at fixed batch sizes.

``python -m bench.fanout`` routes the same batches of position frames, at the shape of ``many``
(1,000 clients x 10 of 1,000 devices), two ways, alternating, each to its own 1,000 loopback TCP
connections:

- ``siscom``: the gateway's router, one session (and core, outbox, write round, direct writer)
  per client, as ``siscom serve`` runs them, minus Hypercorn and the HTTP handshake;
- ``broadcast``: what the bare ``websockets`` server does for each record:
  ``websockets.broadcast`` over real ``websockets`` connections, one write per frame per client.

With ``--deflate`` a third fan-out runs: ``siscom-deflate``, the gateway's as ``siscom`` with every
client having agreed permessage-deflate (each frame compressed once, on its own, for all its
recipients: siscom/web/server/deflate.py); its CPU and the bytes its clients received are printed
as ratios to ``siscom``'s.

It prints the process CPU per delivery of routing and writing (the clients' reading is not
counted) and the writes per delivery, for a few batch sizes: 24 records is what a 10 ms fetch
holds at ``many``'s 2,400 records/s; a loaded server reads bigger batches. No broker, no client
processes: the load scenarios measure the whole server; this measures the one part where the
gateway and the bare server differ, with no scheduler or batching noise, so that a change to the
send path can be compared run against run on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

from websockets.asyncio.connection import Connection, broadcast
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from siscom.core.deliveries import Delivery
from siscom.core.protocol import message_frame
from siscom.core.stream import StreamCore
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.window import RecentWindow
from siscom.metrics import Metrics
from siscom.pipeline.router import Router
from siscom.sessions.flusher import Flusher
from siscom.sessions.session import Session, SessionLimits
from siscom.sessions.transport import Transport
from siscom.web.server.coalesce import DirectWriter, frame_cache
from siscom.web.server.deflate import DeflatedFrames, SharedDeflate, agree
from supervisors import Mailbox

#: A brief-shaped record value (what the simulator produces), about 230 bytes.
VALUE = (
    '{"DEVICE_ID":"%s","LATITUDE":19.4326,"LONGITUDE":-99.1332,"SPEED":42.5,"HEADING":180,'
    '"ALTITUDE":2240,"SATELLITES":9,"IGNITION":1,"EVENT":"POSITION","GPS_DATETIME":"2026-12-01T12:00:00Z",'
    '"producer_ts_ms":%d}'
)
LIMITS = SessionLimits(
    keepalive_seconds=3600.0, send_timeout_seconds=10.0, max_pending_frames=1000, max_device_ids=100, snapshot=False
)


async def loopback_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` connected (server side, client side) loopback TCP sockets, non-blocking."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=count)
    port = listener.getsockname()[1]
    pairs = []
    try:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port))
            server, _ = listener.accept()
            for sock in (server, client):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pairs.append((server, client))
    finally:
        listener.close()
    return pairs


class Reader:
    """The client sides: drained between batches, outside the measured time."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._sockets = sockets
        self._buffer = bytearray(1 << 20)
        self.received = 0

    def drain(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(BlockingIOError):
                while count := sock.recv_into(self._buffer):
                    self.received += count

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


class NeverReceives(Transport):
    """The session's transport apart from its direct writer: clients send nothing here."""

    def __init__(self, direct: DirectWriter) -> None:
        self.peer = "bench"
        self.direct = self._writer = direct
        self._forever: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def send(self, text: str) -> None:
        self._writer.write([text])

    async def receive(self) -> str:
        return await self._forever

    async def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass


def open_websocket_stub(deflated: DeflatedFrames | None = None) -> SimpleNamespace:
    """What :class:`DirectWriter` reads of a Hypercorn websocket stream: open, and without
    compression or (given ``deflated``) with the gateway's, as Chromium's offer agrees it."""
    from wsproto.connection import ConnectionState

    extensions = []
    if deflated is not None:
        agreement = agree(["permessage-deflate; client_max_window_bits"])
        assert agreement is not None
        extensions.append(SharedDeflate(agreement, deflated))
    connection = SimpleNamespace(state=ConnectionState.OPEN, _proto=SimpleNamespace(extensions=extensions))
    return SimpleNamespace(closed=False, connection=connection)


class Gateway:
    """The gateway's fan-out: router, sessions, write round."""

    def __init__(self, subscriptions: list[frozenset[str]], *, deflate: bool = False) -> None:
        self.name = "siscom-deflate" if deflate else "siscom"
        self._deflated = DeflatedFrames() if deflate else None
        self._subscriptions = subscriptions
        self.metrics = Metrics()
        self.table = SubscriptionTable()
        self.window = RecentWindow(50_000, 64 << 20)
        self.router = Router(Mailbox(), self.table, self.metrics, self.window)
        self._tasks: list[asyncio.Task[None]] = []
        self.reader: Reader | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        pairs = await loopback_pairs(len(self._subscriptions))
        flusher = Flusher(self.metrics)
        frames = frame_cache()
        for number, ((server, _), device_ids) in enumerate(zip(pairs, self._subscriptions)):
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server)
            core = StreamCore(device_ids, table=self.table, policy=LIMITS.policy, window=self.window)
            session = Session(
                NeverReceives(DirectWriter(open_websocket_stub(self._deflated), transport, frames)),
                core,
                name=f"session-{number}",
                limits=LIMITS,
                metrics=self.metrics,
                flusher=flusher,
            )
            self._tasks.append(asyncio.create_task(session.run()))
        self.reader = Reader([client for _, client in pairs])
        await asyncio.sleep(0.1)  # every session opened and waiting

    async def route(self, batch: list[Delivery]) -> None:
        await self.router.receive(batch)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self.reader is not None
        self.reader.close()


class Broadcast:
    """The bare server's fan-out: ``websockets.broadcast`` to the connections of each device."""

    name = "broadcast"

    def __init__(self, subscriptions: list[frozenset[str]]) -> None:
        self._subscriptions = subscriptions
        self.by_device: dict[str, set[Connection]] = {}
        self.reader: Reader | None = None
        self._connections: list[Connection] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        pairs = await loopback_pairs(len(self._subscriptions))
        for (server, _), device_ids in zip(pairs, self._subscriptions):
            _, connection = await loop.connect_accepted_socket(
                lambda: Connection(ServerProtocol(state=OPEN), ping_interval=None), server
            )
            self._connections.append(connection)
            for device_id in device_ids:
                self.by_device.setdefault(device_id, set()).add(connection)
        self.reader = Reader([client for _, client in pairs])

    async def route(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            broadcast(self.by_device.get(delivery.device_id, ()), delivery.text)

    async def stop(self) -> None:
        for connection in self._connections:
            connection.transport.abort()
        assert self.reader is not None
        self.reader.close()


def batches(devices: int, size: int, count: int, seed: int) -> list[list[Delivery]]:
    chooser = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for _ in range(count):
        batch = []
        for _ in range(size):
            device_id = f"dev-{chooser.randrange(devices):05d}"
            text = message_frame(VALUE % (device_id, now), "0.1.2-3.4.5")
            batch.append(Delivery(device_id, text, False, now))
        out.append(batch)
    return out


async def measure(fanout: Gateway | Broadcast, work: list[list[Delivery]], drain_every: int) -> float:
    """Process CPU seconds spent routing and writing ``work`` (draining the clients not counted)."""
    assert fanout.reader is not None
    spent = 0
    clock: Callable[[], int] = time.process_time_ns
    for number, batch in enumerate(work, 1):
        start = clock()
        await fanout.route(batch)
        await asyncio.sleep(0)  # the write round the routing scheduled, if any
        spent += clock() - start
        if number % drain_every == 0:
            fanout.reader.drain()
    fanout.reader.drain()
    return spent / 1e9


def recipients(subscriptions: list[frozenset[str]]) -> dict[str, list[int]]:
    by_device: dict[str, list[int]] = {}
    for client, device_ids in enumerate(subscriptions):
        for device_id in device_ids:
            by_device.setdefault(device_id, []).append(client)
    return by_device


async def run(
    clients: int, devices: int, per_client: int, sizes: list[int], deliveries: int, runs: int, deflate: bool = False
) -> None:
    chooser = random.Random(1)
    subscriptions = [
        frozenset(f"dev-{n:05d}" for n in chooser.sample(range(devices), per_client)) for _ in range(clients)
    ]
    by_device = recipients(subscriptions)
    fanouts: list[Gateway | Broadcast] = [Gateway(subscriptions), Broadcast(subscriptions)]
    if deflate:
        fanouts.append(Gateway(subscriptions, deflate=True))
    for fanout in fanouts:
        await fanout.start()
    print(f"fan-out in-process: {clients:,} clients x {per_client} of {devices:,} devices, median of {runs} runs")
    print(
        f"{'records/batch':>13}  {'frames/client/batch':>19}  {'target':>9}  "
        f"{'us/delivery':>11}  {'writes/delivery':>15}  ratio"
    )
    try:
        for size in sizes:
            per_batch = size * clients * per_client / devices
            work = batches(devices, size, max(1, round(deliveries / per_batch)), seed=size)
            delivered = sum(len(by_device.get(d.device_id, ())) for batch in work for d in batch)
            writes = sum(len({c for d in batch for c in by_device.get(d.device_id, ())}) for batch in work)
            figures: dict[str, list[float]] = {fanout.name: [] for fanout in fanouts}
            for _ in range(runs):
                for fanout in fanouts:
                    figures[fanout.name].append(await measure(fanout, work, drain_every=4) / delivered * 1e6)
            received = {fanout.name: fanout.reader.received for fanout in fanouts if fanout.reader is not None}
            if received["siscom"] != received["broadcast"]:  # the same frames, so the same bytes
                raise SystemExit(f"the two fan-outs wrote different bytes: {received}")
            ours, bare = statistics.median(figures["siscom"]), statistics.median(figures["broadcast"])
            frames_per_client = size * per_client / devices
            print(
                f"{size:>13}  {frames_per_client:>19.2f}  {'siscom':>9}  "
                f"{ours:>11.2f}  {writes / delivered:>15.3f}  {ours / bare:.2f}x"
            )
            print(f"{'':>13}  {'':>19}  {'broadcast':>9}  {bare:>11.2f}  {1.0:>15.3f}")
            if deflate:
                squeezed = statistics.median(figures["siscom-deflate"])
                print(
                    f"{'':>13}  {'':>19}  {'deflate':>9}  {squeezed:>11.2f}  {writes / delivered:>15.3f}  "
                    f"{squeezed / ours:.2f}x siscom's CPU"
                )
        print(f"bytes received by the clients of each: {received['siscom']:,} (the same frames, checked)")
        if deflate:
            compressed = received["siscom-deflate"]
            print(f"... compressed (siscom-deflate): {compressed:,}, {compressed / received['siscom']:.2f}x")
    finally:
        for fanout in fanouts:
            await fanout.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--sizes", default="24,96,480", help="records per batch, comma-separated")
    parser.add_argument("--deliveries", type=int, default=100_000, help="deliveries per measurement")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deflate", action="store_true", help="also the gateway's fan-out with compression agreed")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    asyncio.run(
        run(
            options.clients,
            options.devices,
            options.per_client,
            sizes,
            options.deliveries,
            options.runs,
            options.deflate,
        )
    )


if __name__ == "__main__":
    main()
