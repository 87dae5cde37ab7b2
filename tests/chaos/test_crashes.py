"""Scenario 4: actors crash (faults injected by the tests) while clients are connected.

A crash is logged with its traceback and repaired by the actor's supervisor; WebSocket clients
stay connected and keep receiving, because sessions live in another branch of the tree. Crashes
faster than restarts can help escalate, level by level; at the top the gateway does not die
silently: ``/ready`` says the tree failed and ``siscom serve`` exits non-zero with a clear line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import pytest
from chaos.faults import DECODER_POISON, ROUTER_POISON, InjectedFault, actors
from chaos.inprocess import InProcessServer
from chaos.readiness import ReadyWatch
from chaos.traffic import FrameLog, Producer, position, sequences
from support import ServerProcess, ws_client
from support.http import http_get_json
from support.server import REPO_ROOT
from support.status import wait_ready, wait_stats

from siscom.config import Settings
from siscom.gateway import Gateway
from supervisors import Supervisor

pytestmark = pytest.mark.chaos

GAVE_UP = "The supervision tree gave up; the process must exit"


def restarts(server: InProcessServer) -> dict[str, int]:
    """Restarts of every child of the tree, by path: {"pipeline": 0, "pipeline/decoder": 1, ...}."""
    counts = {}
    for child in server.gateway.root.which_children():
        counts[child.id] = child.restarts
        if isinstance(child.actor, Supervisor):
            for grandchild in child.actor.which_children():
                counts[f"{child.id}/{grandchild.id}"] = grandchild.restarts
    return counts


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def in_process(broker, topic: str, fault: str) -> InProcessServer:
    """The gateway in-process, its pipeline built with the faulty actors of ``fault``."""
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_FETCH_MAX_WAIT_MS": "10"}
    )
    return InProcessServer(settings, gateway=Gateway(settings, **actors(fault)))


def crash_lines(server: InProcessServer, actor: str) -> list[logging.LogRecord]:
    return [
        record
        for record in server.log.with_traceback()
        if f"child {actor!r} crashed" in record.getMessage() and record.exc_info[0] is InjectedFault
    ]


@pytest.mark.parametrize(
    ("letter", "actor", "fault", "poison", "restarted"),
    [
        ("a", "decoder", "decoder-poison", DECODER_POISON, ["decoder", "router"]),  # rest_for_one
        ("b", "router", "router-poison", ROUTER_POISON, ["router"]),
    ],
)
async def test_a_crashing_actor_is_restarted_and_clients_stay_connected_and_keep_receiving(
    broker, topic, scenario, letter, actor, fault, poison, restarted
):
    scenario.title = f"4{letter}. {actor} crash (injected)"
    scenario.target = "restarted; clients open and receiving"
    async with in_process(broker, topic, fault) as server:
        await wait_ready(server)
        async with ws_client(server.ws_url()) as client, FrameLog(client) as log:
            await wait_stats(server, lambda s: s["connections"] == 1)
            async with Producer(broker.bootstrap) as producer:
                for n in range(5):
                    await producer.send(topic, "car-1", position("car-1", n))
                await log.wait_until(lambda seen: len(seen.data_frames()) == 5, 10, "records before the crash")
                crashed = time.monotonic()
                await producer.send(topic, "car-1", position("car-1", 99, NOTE=poison))
                await wait_for(lambda: restarts(server)[f"pipeline/{actor}"] == 1, 10, f"{actor} restarted")
                for n in range(5, 10):
                    await producer.send(topic, "car-1", position("car-1", n))
                await log.wait_until(lambda seen: len(seen.data_frames()) == 10, 10, "records after the crash")
            back = log.data_frames()[5][0] - crashed
            assert log.close_code is None
        counts = restarts(server)
        ready, body = await asyncio.to_thread(http_get_json, f"{server.url}/ready")

    assert sequences(log.data_frames(), "car-1") == list(range(10))
    assert {name for name, count in counts.items() if count} == {f"pipeline/{name}" for name in restarted}
    assert len(crash_lines(server, actor)) == 1
    assert ready == 200, body
    scenario.figure(
        "restarted (rest_for_one)",
        ", ".join(f"{name}: {counts[f'pipeline/{name}']}" for name in ("consumer", "decoder", "router")),
    )
    scenario.figure("client", "stayed open, got 10/10 good records in order")
    scenario.figure("poison sent -> next good record delivered", f"{back:.2f} s")
    scenario.figure("crash logged with traceback", "yes (InjectedFault)")


async def test_crashes_beyond_the_pipeline_intensity_restart_the_pipeline_and_sessions_stay(broker, topic, scenario):
    scenario.title = "4c. decoder crash-loop: escalation"
    scenario.target = "pipeline gives up; root restarts it; clients stay"
    async with in_process(broker, topic, "decoder-poison") as server:
        await wait_ready(server)
        async with ws_client(server.ws_url()) as client, FrameLog(client) as log:
            await wait_stats(server, lambda s: s["connections"] == 1)
            async with Producer(broker.bootstrap) as producer:
                crashes = 0
                while restarts(server)["pipeline"] == 0:
                    await producer.send(topic, "car-1", position("car-1", 1000 + crashes, NOTE=DECODER_POISON))
                    crashes += 1
                    await wait_for(
                        lambda: restarts(server)["pipeline"] == 1 or restarts(server)["pipeline/decoder"] == crashes,
                        10,
                        f"crash {crashes} noticed",
                    )
                    assert crashes <= 10
                await wait_ready(server)
                for n in range(5):
                    await producer.send(topic, "car-1", position("car-1", n))
                await log.wait_until(lambda seen: len(seen.data_frames()) == 5, 10, "records after the escalation")
            assert log.close_code is None
        counts = restarts(server)
        gave_up = [r for r in server.log.records if "giving up" in r.getMessage()]

    assert counts["pipeline"] == 1 and counts["sessions"] == 0
    assert sequences(log.data_frames(), "car-1") == list(range(5))
    assert [r.getMessage().split("'")[1] for r in gave_up] == ["pipeline"]
    scenario.figure("decoder crashes", f"{crashes} (pipeline intensity: 5 restarts in 10 s)")
    scenario.figure("escalated to", "root: pipeline restarted once; sessions branch untouched")
    scenario.figure("client", "stayed open, got 5/5 records after the pipeline came back")


async def test_when_the_root_gives_up_ready_says_so_and_clients_are_told_to_go(broker, topic, scenario):
    scenario.title = "4d. consumer crash-loop: root gives up"
    scenario.target = "/ready 503 'tree failed'; logged CRITICAL"
    async with in_process(broker, topic, "consumer-crash") as server:
        async with ws_client(server.ws_url()) as client, FrameLog(client) as log, ReadyWatch(server.url) as ready:
            started = time.monotonic()
            await asyncio.wait_for(server.gateway.failed.wait(), 30)
            failed_after = time.monotonic() - started
            await asyncio.wait_for(log.closed.wait(), 5)
            _, body = await ready.wait_for(503, time.monotonic(), timeout=5)
            health, _ = await asyncio.to_thread(http_get_json, f"{server.url}/health")
        reasons = sorted({answer[2]["reason"] for answer in ready.answers if isinstance(answer[2], dict)})
        critical = [r for r in server.log.records if r.levelno == logging.CRITICAL]

    assert body["reason"] == "supervision tree failed"
    assert log.close_code == 1001
    assert [r.getMessage() for r in critical] == [GAVE_UP]
    assert all(code == 503 for _, code, _ in ready.answers)
    scenario.figure("root gave up after", f"{failed_after:.1f} s (root intensity: 3 restarts in 30 s)")
    scenario.figure("/ready reasons seen", "; ".join(reasons))
    scenario.figure("client close code", str(log.close_code))
    scenario.figure("logged", f"CRITICAL {GAVE_UP!r}")


class FaultyServer(ServerProcess):
    """``siscom serve`` with a faulty actor, through the test-only ``chaos.faulty_server``."""

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "chaos.faulty_server", "--bind", f"{self.host}:{self.port}"]


@pytest.fixture
def faulty_server(tmp_path, broker, topic):
    server = FaultyServer(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "SISCOM_CHAOS_FAULT": "consumer-crash",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]),
            "LOG_LEVEL": "INFO",
        },
        tmp_path / "faulty-server.log",
    )
    yield server
    server.stop()


async def test_when_the_root_gives_up_the_process_exits_non_zero_with_a_clear_line(faulty_server, scenario):
    scenario.title = "4e. root gives up: the process"
    scenario.target = "exit non-zero + one CRITICAL line"
    started = time.monotonic()
    faulty_server.start()
    async with ws_client(faulty_server.ws_url()) as client, FrameLog(client) as log:
        while faulty_server.running and time.monotonic() - started < 30:
            await asyncio.sleep(0.05)
        await asyncio.wait_for(log.closed.wait(), 5)
    exited_after = time.monotonic() - started
    code = faulty_server.stop()
    text = faulty_server.log_text()
    lines = [line for line in text.splitlines() if GAVE_UP in line]

    assert code == 1, faulty_server.log_tail()
    assert len(lines) == 1 and " CRITICAL " in lines[0], lines
    scenario.figure("exit code / after", f"{code} / {exited_after:.1f} s")
    scenario.figure("log line", lines[0].split(" ", 3)[-1][:70])
    scenario.figure("client close code", str(log.close_code))
