"""The gateway reads Kafka over TLS, verifies the broker with KAFKA_SSL_CAFILE, and never leaks
credentials.

Each test makes its own CA (:mod:`support.pki`). The test broker cannot serve TLS itself (see
:mod:`support.tlsproxy`), so a TLS terminator stands in front of it and the broker advertises the
terminator's port: every connection the gateway makes, metadata included, is a TLS connection.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from support import ws_client
from support.http import http_get_json
from support.pki import CertificateAuthority, Issued
from support.status import stats, wait_ready, wait_stats
from support.tlsproxy import TlsTerminator

from siscom.dev.broker import TansuBroker, free_port


@dataclass
class TlsBroker:
    ca: CertificateAuthority
    terminator: TlsTerminator
    broker: TansuBroker
    client: Issued  # a client certificate from the same CA, for mutual TLS

    @property
    def bootstrap(self) -> str:
        return self.terminator.address

    def client_options(self) -> dict:
        context = create_ssl_context(
            cafile=str(self.ca.cert), certfile=str(self.client.cert), keyfile=str(self.client.key)
        )
        return {"bootstrap_servers": self.bootstrap, "security_protocol": "SSL", "ssl_context": context}

    async def create_topic(self) -> str:
        name = f"tls-{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(request_timeout_ms=10_000, **self.client_options())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()
        return name

    async def produce(self, topic: str, values: list[bytes]) -> None:
        producer = AIOKafkaProducer(request_timeout_ms=10_000, **self.client_options())
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()


def tls_broker(
    broker_factory, folder: Path, *, mutual: bool = False, broker_args: tuple[str, ...] = ()
) -> Iterator[TlsBroker]:
    ca = CertificateAuthority(folder / "pki")
    port = free_port()
    plain = broker_factory(advertised_port=port, extra_args=broker_args)
    terminator = TlsTerminator(
        (plain.host, plain.port), ca.issue("broker"), client_ca=ca.cert if mutual else None, port=port
    )
    with terminator:
        yield TlsBroker(ca, terminator, plain, ca.issue("gateway", ip=None))


@pytest.fixture
def tls(broker_factory, tmp_path) -> Iterator[TlsBroker]:
    yield from tls_broker(broker_factory, tmp_path)


@pytest.fixture
def mutual_tls(broker_factory, tmp_path) -> Iterator[TlsBroker]:
    yield from tls_broker(broker_factory, tmp_path, mutual=True)


def record(device_id: str, n: int) -> bytes:
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": n}}).encode()


async def wait_log(server, text: str, count: int = 1, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while (log := server.log_text()).count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged {count}x within {timeout}s:\n{server.log_tail()}")
        await asyncio.sleep(0.1)
    return log


def tls_env(tls: TlsBroker, topic: str, **more: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": tls.bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(tls.ca.cert),
        "KAFKA_RECONNECT_BACKOFF_MAX_SECONDS": "0.5",
        **more,
    }


async def test_the_gateway_delivers_records_read_over_tls(server_factory, tls):
    topic = await tls.create_topic()
    sessions_before = tls.terminator.sessions
    server = server_factory(tls_env(tls, topic))
    await wait_ready(server)
    assert tls.terminator.sessions > sessions_before  # the gateway's own TLS connections
    async with ws_client(server.ws_url()) as client:
        await wait_stats(server, lambda s: s["connections"] == 1)
        await tls.produce(topic, [record("tls-1", n) for n in range(3)])
        frames = [await client.next_frame(10) for _ in range(3)]
    assert [frame["data"]["data"]["SEQ"] for frame in frames] == [0, 1, 2]


async def test_a_broker_certificate_from_another_ca_is_refused_with_a_clear_log_line(server_factory, tls, tmp_path):
    topic = await tls.create_topic()
    stranger = CertificateAuthority(tmp_path / "stranger", name="stranger-ca")
    server = server_factory(tls_env(tls, topic, KAFKA_SSL_CAFILE=str(stranger.cert)))
    log = await wait_log(server, "CERTIFICATE_VERIFY_FAILED", count=2)
    line = next(line for line in log.splitlines() if "CERTIFICATE_VERIFY_FAILED" in line)
    assert tls.bootstrap in line and "certificate verify failed" in line
    status, body = http_get_json(f"{server.url}/ready")
    assert status == 503 and "unreachable" in body["reason"]
    async with ws_client(server.ws_url()) as client:
        await tls.produce(topic, [record("tls-1", 1)])
        with pytest.raises(TimeoutError):
            await client.next_frame(1.0)
    assert stats(server)["records"] == 0
    assert "Traceback" not in server.log_text()


async def test_mutual_tls_sends_the_configured_client_certificate(server_factory, mutual_tls):
    topic = await mutual_tls.create_topic()
    without = server_factory(tls_env(mutual_tls, topic))
    with_cert = server_factory(
        tls_env(
            mutual_tls,
            topic,
            KAFKA_SSL_CERTFILE=str(mutual_tls.client.cert),
            KAFKA_SSL_KEYFILE=str(mutual_tls.client.key),
        )
    )
    await wait_ready(with_cert)
    async with ws_client(with_cert.ws_url()) as client:
        await wait_stats(with_cert, lambda s: s["connections"] == 1)
        await mutual_tls.produce(topic, [record("mtls-1", 7)])
        assert (await client.next_frame(10))["data"]["data"] == {"DEVICE_ID": "mtls-1", "SEQ": 7}
    # Without a certificate the broker side refuses the handshake: never ready.
    status, body = http_get_json(f"{without.url}/ready")
    assert status == 503, body


async def test_kafka_credentials_never_appear_in_logs_ready_or_stats(server_factory, broker_factory, tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    # A broker that wants authentication and knows no users: the gateway's SASL exchange, over
    # TLS, is refused again and again; everything it reports about that must leave the password out.
    for tls in tls_broker(broker_factory, tmp_path, broker_args=("--authentication",)):
        server = server_factory(
            {
                **tls_env(tls, "some-topic"),
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_USERNAME": "gateway",
                "KAFKA_PASSWORD": password,
                "LOG_LEVEL": "DEBUG",
            }
        )
        sessions_before = tls.terminator.sessions
        await wait_log(server, "Cannot connect to Kafka", count=3)
        assert tls.terminator.sessions > sessions_before  # the attempts did reach the broker, over TLS
        ready = http_get_json(f"{server.url}/ready")
        counters = http_get_json(f"{server.url}/api/v1/stream/stats")
        assert ready[0] == 503
        everything = server.log_text() + json.dumps(ready) + json.dumps(counters)
        assert password not in everything
        assert password[3:15] not in everything  # not even a piece of it
