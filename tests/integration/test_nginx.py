"""The gateway behind a real nginx, configured from ``deploy/nginx.conf``, as operators run it.

Two replicas of the server with the same environment sit behind one nginx on a loopback port,
reading a topic with several partitions from the test broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from support import ws_client
from support.binaries import require_program
from support.kafka import produce
from support.nginx import Nginx
from support.sse import sse_client
from support.status import stats, wait_ready, wait_stats
from websockets.exceptions import ConnectionClosed, WebSocketException

pytestmark = pytest.mark.nginx

#: Where the test clients connect from, so their address differs from nginx's (127.0.0.1).
CLIENT_ADDRESS = "127.0.0.2"
DEVICES = ("car-0", "car-1", "car-2")  # car-N is written to partition N


def record(device_id: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}}).encode()


def seqs(frames: list[dict], device_id: str) -> list[int]:
    return [f["data"]["data"]["SEQ"] for f in frames if f["data"]["data"]["DEVICE_ID"] == device_id]


@pytest.fixture
def nginx_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Nginx]]:
    """Start nginx processes in front of given upstreams; each is stopped at teardown."""
    binary = require_program("nginx", "nginx-light")
    started: list[Nginx] = []

    def start(upstreams: list[str], **options: object) -> Nginx:
        directory = tmp_path / f"nginx-{len(started)}"
        directory.mkdir()
        proxy = Nginx(binary, directory, upstreams, **options)  # type: ignore[arg-type]
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()
    if any(getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")):
        for proxy in started:
            print(f"----- {proxy.error_log} (last lines) -----\n{proxy.log_tail()}")


@pytest.fixture
def replicas(server_factory, broker, topic_factory):
    """Start `count` servers with one identical environment on a fresh 3-partition topic."""

    async def start(count: int = 2, **settings: str):
        topic = await topic_factory(partitions=len(DEVICES))
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, **settings}
        servers = [server_factory(env) for _ in range(count)]
        for server in servers:
            body = await wait_ready(server)
            assert (body["assigned_partitions"], body["total_partitions"]) == (3, 3)
        return topic, servers

    return start


async def produce_round(bootstrap: str, topic: str, seqs_: range) -> None:
    """One record per device for each number in `seqs_`, each device on its own partition."""
    for partition, device in enumerate(DEVICES):
        await produce(bootstrap, topic, [record(device, n) for n in seqs_], partition=partition)


def stream_url(proxy: Nginx) -> str:
    return proxy.ws_url("/api/v1/stream?device_ids=" + ",".join(DEVICES))


async def test_clients_get_every_record_of_their_devices_whichever_replica_serves_them(replicas, nginx_factory, broker):
    topic, servers = await replicas(2, STREAM_TRUSTED_PROXIES="127.0.0.1", LOG_FORMAT="json")
    proxy = nginx_factory([s.url.removeprefix("http://") for s in servers])
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                ws_client(stream_url(proxy), local_addr=(CLIENT_ADDRESS, 0), ping_interval=None)
            )
            for _ in range(4)
        ]
        # nginx shares the clients out: both replicas serve some.
        for server in servers:
            await wait_stats(server, lambda s: s["connections"] == 2)
        await produce_round(broker.bootstrap, topic, range(10))
        for client in clients:
            frames = [await client.next_frame() for _ in range(3 * 10)]
            for device in DEVICES:
                assert seqs(frames, device) == list(range(10)), device

    # The replicas log the client's address as nginx forwarded it, not nginx's own.
    for server in servers:
        messages = [json.loads(line)["message"] for line in server.log_text().splitlines() if line.startswith("{")]
        opened_for = [m for m in messages if m.startswith("Stream opened for")]
        assert len(opened_for) == 2, opened_for
        assert all(m.startswith(f"Stream opened for {CLIENT_ADDRESS},") for m in opened_for), opened_for


async def test_the_forwarded_address_is_believed_only_from_a_trusted_proxy(replicas):
    _, (server,) = await replicas(1, STREAM_TRUSTED_PROXIES="127.0.0.1")
    # Straight to the replica, from an address that is not the proxy: the header is ignored.
    async with ws_client(
        server.ws_url(), local_addr=("127.0.0.3", 0), additional_headers={"X-Forwarded-For": "127.0.0.9"}
    ):
        await wait_stats(server, lambda s: s["connections"] == 1)
    assert "Stream opened for 127.0.0.3," in server.log_text()
    assert "127.0.0.9" not in server.log_text()


class Follower:
    """A client that reconnects through nginx whenever its stream is cut, as dashboards do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[dict] = []
        self.connections = 0

    def last_seq(self, device: str) -> int | None:
        found = seqs(self.frames, device)
        return found[-1] if found else None

    async def run(self, done: Callable[[Follower], bool]) -> None:
        while not done(self):
            try:
                async with ws_client(self.url, local_addr=(CLIENT_ADDRESS, 0), ping_interval=None) as client:
                    self.connections += 1
                    while not done(self):
                        self.frames.append(await client.next_frame(timeout=30))
            except (ConnectionClosed, WebSocketException, OSError):
                await asyncio.sleep(0.05)


async def test_clients_of_a_killed_replica_reconnect_and_continue_through_the_other(replicas, nginx_factory, broker):
    topic, servers = await replicas(2)
    proxy = nginx_factory([s.url.removeprefix("http://") for s in servers])
    followers = [Follower(stream_url(proxy)) for _ in range(4)]
    last = 10_000

    def done(follower: Follower) -> bool:
        return all(follower.last_seq(device) == last for device in DEVICES)

    tasks = [asyncio.create_task(f.run(done)) for f in followers]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    await producer.start()
    try:
        for server in servers:
            await wait_stats(server, lambda s: s["connections"] == 2)
        doomed, survivor = servers

        async def write(seq: int) -> None:
            for partition, device in enumerate(DEVICES):
                await producer.send_and_wait(topic, record(device, seq), partition=partition)

        # Records flow while one replica is killed; its clients lose their stream, come back
        # through nginx to the survivor, and go on from the newest position of each device.
        for seq in range(40):
            await write(seq)
            if seq == 20:
                doomed.kill()
            await asyncio.sleep(0.02)
        await wait_stats(survivor, lambda s: s["connections"] == 4, timeout=15)
        await write(last)
        async with asyncio.timeout(20):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()

    assert sorted(f.connections for f in followers) == [1, 1, 2, 2]
    for follower in followers:
        for device in DEVICES:
            received = seqs(follower.frames, device)
            assert received == sorted(received), received  # never back in time
            if follower.connections == 1:  # on the survivor all along: every record
                assert received == [*range(40), last]
            else:  # reconnected: records up to the kill, then the newest position onwards
                assert received[0] == 0 and received[-1] == last


async def test_an_idle_stream_outlives_many_proxy_read_timeouts_thanks_to_keep_alives(replicas, nginx_factory, broker):
    topic, (server,) = await replicas(1, STREAM_KEEPALIVE_SECONDS="0.3")
    proxy = nginx_factory([server.url.removeprefix("http://")], read_timeout="1s")
    async with ws_client(stream_url(proxy), skip_pings=False, ping_interval=None) as client:
        started = time.monotonic()
        pings = 0
        while time.monotonic() - started < 3.5:  # three and a half times proxy_read_timeout
            frame = await client.next_frame(timeout=2.0)
            assert frame["event"] == "ping", frame
            pings += 1
        await produce(broker.bootstrap, topic, [record("car-1", 7)], partition=1)
        frames = await client.frames_until(lambda f: f["event"] == "message")
    assert pings >= 6  # about twelve are due; fewer on a busy machine, still many timeouts' worth
    assert frames[-1]["data"]["data"] == {"DEVICE_ID": "car-1", "SEQ": 7}


async def test_a_stream_silent_for_longer_than_proxy_read_timeout_is_cut_by_nginx(replicas, nginx_factory):
    """Why the keep-alive interval must stay below nginx's ``proxy_read_timeout``."""
    _, (server,) = await replicas(1, STREAM_KEEPALIVE_SECONDS="30")
    proxy = nginx_factory([server.url.removeprefix("http://")], read_timeout="1s")
    async with ws_client(stream_url(proxy), skip_pings=False, ping_interval=None) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        # Cut long before the first keep-alive (30 s) would have come.
        with pytest.raises(ConnectionClosed):
            await client.next_frame(timeout=5.0)
    assert "upstream timed out" in proxy.error_log.read_text()
    await wait_stats(server, lambda s: s["connections"] == 0)
    assert stats(server)["connections_closed"] == 1


async def test_nginx_passes_the_compression_offer_and_compressed_frames_through(replicas, nginx_factory, broker):
    """The gateway compresses each frame once for all its clients: the template lets browsers'
    offers through, and the frames they get through nginx decode to the records."""
    topic, (server,) = await replicas(1)
    proxy = nginx_factory([server.url.removeprefix("http://")])
    async with ws_client(proxy.ws_url("/api/v1/stream?device_ids=car-1"), compression="deflate") as proxied:
        assert [type(e).__name__ for e in proxied.connection.protocol.extensions] == ["PerMessageDeflate"]
        await wait_stats(server, lambda s: s["connections"] == 1)
        await produce(broker.bootstrap, topic, [record("car-1", n) for n in range(3)], partition=1)
        frames = await proxied.frames_until(lambda f: f["event"] == "message" and f["data"]["data"]["SEQ"] == 2)
    assert [f["data"]["data"]["SEQ"] for f in frames if f["event"] == "message"] == [0, 1, 2]


async def test_server_sent_events_pass_through_nginx_unbuffered_and_outlive_its_read_timeout(
    replicas, nginx_factory, broker
):
    """The template serves SSE as it is: each event as it comes (proxy_buffering off, and the
    app's X-Accel-Buffering: no), an idle stream kept open by its pings."""
    topic, (server,) = await replicas(1, STREAM_KEEPALIVE_SECONDS="0.3", STREAM_SNAPSHOT="false")
    proxy = nginx_factory([server.url.removeprefix("http://")], read_timeout="1s")
    async with sse_client(f"{proxy.url}/api/v1/stream?device_ids=car-1") as client:
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream"
        assert client.headers["cache-control"] == "no-store"
        started = time.monotonic()
        pings = 0
        while time.monotonic() - started < 2.5:  # two and a half times proxy_read_timeout
            assert json.loads((await client.next_event(2.0, skip_pings=False)).data)["event"] == "ping"
            pings += 1
        waits = []
        for seq in range(5):
            sent = time.monotonic()
            await produce(broker.bootstrap, topic, [record("car-1", seq)], partition=1)
            event = await client.next_event(3.0)
            waits.append(time.monotonic() - sent)
            # Each small event arrives alone, before the next record is even written: nothing held
            # back to fill a buffer.
            assert json.loads(event.data)["data"]["data"] == {"DEVICE_ID": "car-1", "SEQ": seq}
            assert event.raw == b"id: " + event.id.encode() + b"\ndata: " + event.data.encode() + b"\n\n"
    assert bytes(client.body).startswith(b"retry: ")
    assert pings >= 4
    print(f"\nSSE through nginx: {pings} pings over 2.5 s; record-to-event {[round(w, 3) for w in waits]} s")
