"""``GET /metrics`` scraped from the real server and read with prometheus_client's parser, after
known workloads: one process, ``--workers 2``, with tokens on, and on a separate address."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import jwt
import psutil
import pytest
from support import free_port, ws_client
from support.http import http_get
from support.kafka import produce
from support.prometheus import Scrape, get_via_worker, scrape
from support.status import stats, wait_ready, wait_stats
from support.workload import KNOWN_TOTALS, run_known_workload
from websockets.exceptions import InvalidStatus

from siscom.metrics import Kind, Metric
from siscom.prometheus import LATENCY_BUCKETS, exposed_name

COUNTERS = [m for m in Metric if m.kind is Kind.COUNTER]
SECRET = "prometheus-secret-" + uuid.uuid4().hex


def record(device_id: str, seq: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq}}).encode()


def mint(expires_in: float = 300) -> str:
    return jwt.encode({"devices": [], "exp": int(time.time() + expires_in)}, SECRET, algorithm="HS256")


async def test_a_scrape_after_a_known_workload_equals_the_stats_and_times_the_latency(
    make_server, broker, topic, alerts_topic, tmp_path: Path
):
    # An empty TMPDIR of its own: one process serving alone writes no metrics files anywhere.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = make_server(KAFKA_ALERTS_TOPIC=alerts_topic, TMPDIR=str(tmp))
    await wait_ready(server)

    def two_connections_scraped() -> None:
        assert scrape(server).values["siscom_connections"] == 2

    # A record stamped seven seconds ago lands in the latency histogram's 5-10 s bucket.
    await run_known_workload(
        server, broker.bootstrap, topic, alerts_topic, stamped_seconds_ago=7, while_connected=two_connections_scraped
    )
    totals = await wait_stats(server, lambda s: s["connections"] == 0 and s["partition_lag"] == 0)

    scraped = scrape(server)
    for name, value in KNOWN_TOTALS.items():
        assert scraped.values[f"siscom_{name}_total"] == value, name
    # Every counter and gauge of the registry, equal to the stats endpoint's.
    for metric in Metric:
        if metric.kind is not Kind.TIMER:
            assert scraped.values[exposed_name(metric)] == totals[metric], metric
    assert scraped.families["siscom_connections"] == "gauge"
    assert scraped.families["siscom_records"] == "counter"
    assert scraped.families["siscom_latency_seconds"] == "histogram"
    assert all(name.startswith("siscom_") for name in scraped.families)

    buckets = scraped.buckets["siscom_latency_seconds"]
    assert sorted(buckets) == [*LATENCY_BUCKETS, float("inf")]
    count = scraped.values["siscom_latency_seconds_count"]
    assert count >= 1 and buckets[float("inf")] == count
    assert buckets[10.0] - buckets[5.0] >= 1  # the old record
    assert scraped.values["siscom_latency_seconds_sum"] >= 7.0
    assert list(tmp.iterdir()) == []


async def test_with_workers_every_scrape_shows_the_sum_over_both_workers(server_factory, broker, topic, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_AUTO_OFFSET_RESET": "earliest",
        "STREAM_SNAPSHOT_LOOKBACK_SECONDS": "0",
        "TMPDIR": str(tmp),
    }
    server = server_factory(env, args=["--workers", "2"])
    workers = {worker.pid for worker in psutil.Process(server.pid).children()}
    assert len(workers) == 2
    # The run's own directory, one file per worker and type.
    (metrics_dir,) = tmp.iterdir()
    assert metrics_dir.name.startswith("siscom-metrics-")

    values = [record(f"dev-{n % 3}", n) for n in range(20)]
    async with AsyncExitStack() as stack:
        clients, holders = [], set()
        # Open clients until both workers hold some (the kernel picks the worker; bounded).
        for _ in range(100):
            clients.append(await stack.enter_async_context(ws_client(server.ws_url())))
            await asyncio.sleep(0.05)
            holders = {pid for pid in workers if _holds_a_client(pid, server.port)}
            if len(clients) >= 4 and holders == workers:
                break
        assert holders == workers
        await produce(broker.bootstrap, topic, values)
        for client in clients:
            assert len([await client.next_frame(10.0) for _ in values]) == len(values)

        # Both workers read every record: each reports them once.
        expected = {
            "siscom_connections": len(clients),
            "siscom_connections_opened_total": len(clients),
            "siscom_records_total": 2 * len(values),
            "siscom_frames_sent_total": len(clients) * len(values),
        }
        answered: dict[int, Scrape] = {}
        per_worker_stats: dict[int, dict] = {}
        for _ in range(200):
            pid, status, body = await asyncio.to_thread(get_via_worker, server, "/metrics")
            assert status == 200, body[:300]
            answered[pid] = Scrape.parse(body.decode())
            pid, status, body = await asyncio.to_thread(get_via_worker, server, "/api/v1/stream/stats")
            per_worker_stats[pid] = json.loads(body)
            if set(answered) == set(per_worker_stats) == workers:
                break
        assert set(answered) == set(per_worker_stats) == workers
        for pid, scraped in answered.items():
            for name, value in expected.items():
                assert scraped.values[name] == value, (pid, name)
            # And the counters are the sum of what each worker's stats endpoint says.
            for metric in COUNTERS:
                assert scraped.values[exposed_name(metric)] == sum(s[metric] for s in per_worker_stats.values()), metric
            # One latency sample per batch per worker, at least.
            assert scraped.values["siscom_latency_seconds_count"] >= 2
            # The lag is the worst worker's, not a sum of two readers of the same partitions.
            assert scraped.values["siscom_partition_lag"] == max(s["partition_lag"] for s in per_worker_stats.values())

        status = await asyncio.to_thread(server.stop)
    assert status == 0, server.log_tail()
    # The run's directory goes with the run.
    assert list(tmp.iterdir()) == []


def _holds_a_client(pid: int, port: int) -> bool:
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port for c in connections)


async def test_with_tokens_on_metrics_follow_the_stats_unless_opened(make_server):
    secured = make_server(STREAM_JWT_SECRET=SECRET)
    status, body = http_get(f"{secured.url}/metrics")
    assert status == 401, body
    status, body = http_get(f"{secured.url}/metrics?token=not-a-token")
    assert status == 401, body
    bearer = {"Authorization": f"Bearer {mint()}"}
    assert scrape(secured, bearer).values["siscom_auth_failures_total"] == 2
    assert stats(secured, bearer)["auth_failures"] == 2
    assert scrape(secured, {"Authorization": "Bearer " + mint()}).families

    opened = make_server(STREAM_JWT_SECRET=SECRET, METRICS_ACCESS="open")
    assert scrape(opened).values["siscom_auth_failures_total"] == 0
    # Only /metrics is opened: the stats still want a token.
    assert http_get(f"{opened.url}/api/v1/stream/stats")[0] == 401

    tokened = make_server(STREAM_JWT_SECRET=SECRET, METRICS_ACCESS="token")
    assert http_get(f"{tokened.url}/metrics")[0] == 401
    assert scrape(tokened, bearer).values["siscom_auth_failures_total"] == 1


async def test_without_tokens_metrics_are_open_by_default(make_server):
    server = make_server()
    status, body = http_get(f"{server.url}/metrics")
    assert status == 200
    assert b"# TYPE siscom_records_total counter" in body


def _get(url: str) -> int:
    return http_get(url)[0]


async def test_with_a_metrics_bind_metrics_are_served_there_alone(make_server, server_factory, broker, topic):
    """A port only Prometheus reaches: open there, while the main port keeps its tokens."""
    port = free_port()
    env = {"STREAM_JWT_SECRET": SECRET, "METRICS_ACCESS": "open", "METRICS_BIND": f"127.0.0.1:{port}"}
    single = make_server(env)
    workers = server_factory(
        {
            **env,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "METRICS_BIND": f"127.0.0.1:{free_port()}",
        },
        args=["--workers", "2"],
    )
    for server in (single, workers):
        metrics_url = f"http://{server.env['METRICS_BIND']}"
        assert _get(f"{metrics_url}/metrics") == 200
        assert Scrape.parse(http_get(f"{metrics_url}/metrics")[1].decode()).families
        # Nothing else there: no health, no stats, no page, no stream.
        for path in ("/health", "/ready", "/api/v1/stream/stats", "/"):
            assert _get(metrics_url + path) == 404, path
        with pytest.raises(InvalidStatus) as refused:
            async with ws_client(f"ws://{server.env['METRICS_BIND']}/api/v1/stream"):
                pass
        assert refused.value.response.status_code == 404
        # And no /metrics on the main port, whose other routes are as they were.
        assert _get(f"{server.url}/metrics") == 404
        assert _get(f"{server.url}/health") == 200
        assert _get(f"{server.url}/api/v1/stream/stats") == 401


def test_a_metrics_bind_on_the_main_port_stops_the_start(server_factory):
    server = server_factory(started=False)
    server.env["METRICS_BIND"] = f"127.0.0.1:{server.port}"
    with pytest.raises(RuntimeError, match="METRICS_BIND"):
        server.start()
