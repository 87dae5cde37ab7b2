"""The last-positions topic and its writer: vehicles parked longer than the lookback stay on the map."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from support.fleet import record, snapshot_of
from support.kafka import consume, produce
from support.server import DEFAULT_ENV, REPO_ROOT
from support.status import wait_ready

from siscom.dev.processes import ChildProcess, clean_env


async def latest_in(bootstrap: str, topic: str, timeout: float = 5.0) -> dict[str, tuple[int, int, bytes]]:
    """Per key (the device id in the value when a record has none), the newest (SEQ, timestamp,
    value) in ``topic``, reading all of it."""
    found: dict[str, tuple[int, int, bytes]] = {}
    for r in await consume(bootstrap, topic, None, timeout=timeout):
        data = json.loads(r.value)["data"]
        key = r.key.decode() if r.key is not None else data["DEVICE_ID"]
        found[key] = (data["SEQ"], r.timestamp, r.value)
    return found


def writer_process(broker, topic: str, snapshot_topic: str, log_path, **env: str) -> ChildProcess:
    environment = clean_env(
        {
            "PYTHONPATH": str(REPO_ROOT),
            **DEFAULT_ENV,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_SNAPSHOT_TOPIC": snapshot_topic,
            **env,
        }
    )
    return ChildProcess([sys.executable, "-m", "siscom", "snapshot-writer"], log_path=log_path, env=environment)


def test_the_writer_refuses_to_start_without_its_topic():
    result = subprocess.run(
        [sys.executable, "-m", "siscom", "snapshot-writer"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env({"PYTHONPATH": str(REPO_ROOT), "KAFKA_TOPIC": "positions"}),
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "KAFKA_SNAPSHOT_TOPIC" in result.stderr and "snapshot-writer" in result.stderr


async def test_the_last_positions_topic_fills_the_gap_past_the_lookback_and_the_writer_stops_cleanly(
    server_factory, broker, topic_factory, tmp_path
):
    topic = await topic_factory(partitions=2)
    snapshot_topic = f"{topic}-last"
    await produce(broker.bootstrap, topic, [record(f"parked-{n}", 1) for n in range(10)], partition=0)
    # The timestamps the records carry in the log (the producer's metadata may differ by a
    # millisecond from what the batch stored).
    stamps = {key: stamp for key, (_, stamp, _) in (await latest_in(broker.bootstrap, topic, timeout=1.0)).items()}
    assert len(stamps) == 10

    # A writer started after the fleet parked still records it (its own warm-up), then goes live.
    writer = writer_process(broker, topic, snapshot_topic, tmp_path / "writer.log", STREAM_SNAPSHOT_WRITE_SECONDS="60")
    try:
        # The test broker answers DescribeConfigs with nothing: what the writer asked for is in its
        # log. (Wait for it before reading the topic: a reader's metadata request would create it.)
        created = f"Created the last-positions topic {snapshot_topic} (2 partitions, cleanup.policy=compact)"
        assert writer.wait_until(lambda: created in writer.log_text(), timeout=30), writer.log_tail()
        deadline = time.monotonic() + 30
        while len(found := await latest_in(broker.bootstrap, snapshot_topic, timeout=1.0)) < 10:
            assert time.monotonic() < deadline, (found, writer.log_tail())
        assert {key: seq for key, (seq, _, _) in found.items()} == {f"parked-{n}": 1 for n in range(10)}
        # Key = device id, value byte for byte, timestamp = the original record's.
        assert found["parked-3"][2] == record("parked-3", 1)
        assert {key: stamp for key, (_, stamp, _) in found.items()} == stamps

        # A device reports again within its write interval: written only at shutdown.
        await produce(broker.bootstrap, topic, [record("parked-0", 2)], partition=1)
        await asyncio.sleep(2.0)
        assert (await latest_in(broker.bootstrap, snapshot_topic, timeout=1.0))["parked-0"][0] == 1
    finally:
        code = writer.stop(20)
    assert code == 0, writer.log_tail()
    assert (await latest_in(broker.bootstrap, snapshot_topic, timeout=1.0))["parked-0"][0] == 2

    # Later, past a short lookback: only the last-positions topic still knows the parked fleet.
    # (Real time: the test broker finds offsets by when it appended records. The lookback must
    # reach "recent" however long the servers take to start, and not the parked fleet.)
    await asyncio.sleep(14.0)
    await produce(broker.bootstrap, topic, [record("recent", 1)], partition=0)
    await produce(broker.bootstrap, topic, [record("marker", 0)], partition=1)
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, "STREAM_SNAPSHOT_LOOKBACK_SECONDS": "12"}
    without = server_factory(env, started=False)
    with_topic = server_factory({**env, "KAFKA_SNAPSHOT_TOPIC": snapshot_topic}, started=False)
    await asyncio.gather(asyncio.to_thread(without.start), asyncio.to_thread(with_topic.start))
    await wait_ready(without)
    await wait_ready(with_topic)
    assert sorted(await snapshot_of(without.ws_url())) == [("marker", 0), ("recent", 1)]
    assert dict(await snapshot_of(with_topic.ws_url())) == {
        **{f"parked-{n}": 1 for n in range(1, 10)},
        "parked-0": 2,
        "recent": 1,
        "marker": 0,
    }
