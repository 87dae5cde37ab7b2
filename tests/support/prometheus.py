"""Reading ``GET /metrics`` the way Prometheus would, with prometheus_client's own parser."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil
from prometheus_client.parser import text_string_to_metric_families

from .http import http_get


@dataclass
class Scrape:
    """The samples of one scrape: ``values[sample name] -> value`` for unlabelled samples, and
    each histogram's cumulative buckets, ``buckets[name][le] -> count``."""

    families: dict[str, str] = field(default_factory=dict)  # family name -> type
    values: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls()
        for family in text_string_to_metric_families(text):
            scrape.families[family.name] = family.type
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    scrape.buckets.setdefault(sample.name[: -len("_bucket")], {})[le] = sample.value
                else:
                    assert not sample.labels, sample
                    scrape.values[sample.name] = sample.value
        return scrape


def scrape(server, headers: Mapping[str, str] | None = None) -> Scrape:
    status, body = http_get(f"{server.url}/metrics", headers=headers)
    assert status == 200, body[:500]
    return Scrape.parse(body.decode())


def _worker_holding(server, local_port: int, timeout: float = 5.0) -> int:
    """The pid of the worker that accepted the connection from ``local_port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in psutil.Process(server.pid).children():
            for connection in worker.net_connections(kind="tcp"):
                if connection.raddr and connection.raddr.port == local_port and connection.laddr.port == server.port:
                    return worker.pid
        time.sleep(0.02)
    raise AssertionError(f"no worker accepted the connection from port {local_port}")


def get_via_worker(server, path: str) -> tuple[int, int, bytes]:
    """GET ``path`` on a ``--workers N`` server: ``(worker pid that answered, status, body)``.

    The connection is opened first and the worker that accepted it found from the kernel's
    socket table, so the test knows for certain which process answered.
    """
    sock = socket.create_connection((server.host, server.port), timeout=5.0)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5.0)
    connection.sock = sock
    try:
        pid = _worker_holding(server, sock.getsockname()[1])
        connection.request("GET", path)
        response = connection.getresponse()
        return pid, response.status, response.read()
    finally:
        connection.close()
