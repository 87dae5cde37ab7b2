"""Scenario 1: the broker is killed and restarted empty, again and again, under connected clients.

The test broker keeps no storage: after a restart the topic is gone, is created again (as a
producer with auto-create would), and its log starts over at offset 0. A consumer that trusted
its offsets would wait for offsets that come much later, or skip the records written before it
caught up. The gateway must notice by itself and deliver every record written after the broker
came back, in order, to clients that stayed connected all along.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from chaos.traffic import FrameLog, Producer, position, record_of, sequences
from support import ws_client
from support.status import stats, wait_ready

from siscom.dev.broker import create_topics

pytestmark = pytest.mark.chaos

TOPIC = "positions"
DEVICES = ("bus-1", "bus-2", "bus-3")
#: How long the broker stays dead in each cycle, and how the records come after it: paced, or
#: all at once. A short death is over before the consumer's probe notices; a burst then grows
#: the new log past the offsets read before it, so offsets alone would skip the burst's start.
CYCLES = ((1.0, "paced"), (0.15, "burst"), (2.0, "paced"), (0.3, "burst"))
RECORDS_PER_CYCLE = 30
SEND_INTERVAL = 0.05


def in_cycle(cycle: int):
    return lambda item: record_of(item[1]).get("CYCLE") == cycle


async def test_broker_killed_and_restarted_empty_every_new_record_reaches_every_client(broker_and_server, scenario):
    scenario.title = "1. broker SIGKILL + restart empty"
    scenario.target = "median < 3 s; 100% after restart, in order"
    broker, server = await broker_and_server(TOPIC, 2, STREAM_KEEPALIVE_SECONDS="1")
    pid = server.pid
    filtered_url = server.ws_url("/api/v1/stream?device_ids=bus-2")
    async with ws_client(server.ws_url()) as every, ws_client(filtered_url) as one:
        async with FrameLog(every) as log, FrameLog(one) as log_one:
            async with Producer(broker.bootstrap) as producer:
                for n in range(6):
                    await producer.send(TOPIC, DEVICES[n % 3], position(DEVICES[n % 3], n, CYCLE=-1))
            await log.wait_until(lambda seen: len(seen.data_frames()) >= 6, 10, "records before the first kill")

            latencies = []
            for cycle, (downtime, pattern) in enumerate(CYCLES):
                broker.kill()
                await asyncio.sleep(downtime)
                await asyncio.to_thread(broker.start)
                back = time.monotonic()
                await create_topics(broker.bootstrap, {TOPIC: 2})
                records = [(DEVICES[n % 3], position(DEVICES[n % 3], n, CYCLE=cycle)) for n in range(RECORDS_PER_CYCLE)]
                async with Producer(broker.bootstrap) as producer:
                    if pattern == "burst":
                        await producer.send_many(TOPIC, records)
                    else:
                        for device, value in records:
                            await producer.send(TOPIC, device, value)
                            await asyncio.sleep(SEND_INTERVAL)
                await log.wait_until(
                    lambda seen: len(list(filter(in_cycle(cycle), seen.data_frames()))) >= RECORDS_PER_CYCLE,
                    20,
                    f"all records of cycle {cycle}",
                )
                arrivals = [at for at, _ in filter(in_cycle(cycle), log.data_frames())]
                latencies.append(min(arrivals) - back)
                await log_one.wait_until(
                    lambda seen: len(list(filter(in_cycle(cycle), seen.data_frames()))) >= RECORDS_PER_CYCLE // 3,
                    10,
                    f"bus-2's records of cycle {cycle}",
                )

            await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive by now
            assert log.close_code is None and log_one.close_code is None, "a client was disconnected"
            frames, frames_one, pings = log.data_frames(), log_one.data_frames(), log.pings()

    produced = delivered = 0
    for cycle in range(len(CYCLES)):
        cycle_frames = list(filter(in_cycle(cycle), frames))
        for index, device in enumerate(DEVICES):
            expected = list(range(index, RECORDS_PER_CYCLE, len(DEVICES)))
            assert sequences(cycle_frames, device) == expected, f"cycle {cycle}, {device}"
        assert sequences(list(filter(in_cycle(cycle), frames_one)), "bus-2") == list(range(1, RECORDS_PER_CYCLE, 3))
        assert {record_of(f)["DEVICE_ID"] for _, f in filter(in_cycle(cycle), frames_one)} == {"bus-2"}
        produced += RECORDS_PER_CYCLE
        delivered += len(cycle_frames)
    assert server.pid == pid and server.running, "the gateway process was restarted"
    body = await wait_ready(server)
    counters = stats(server)
    test_seconds = pings[-1] - pings[0]
    assert len(pings) >= test_seconds / 2, f"keep-alives stopped: {len(pings)} in {test_seconds:.1f} s"

    median = statistics.median(latencies)
    log_text = server.log_text()
    scenario.figure("cycles (broker dead for, records)", ", ".join(f"{d:g} s {p}" for d, p in CYCLES))
    scenario.figure("broker back -> first record delivered, median", f"{median:.2f} s")
    scenario.figure("... per cycle", ", ".join(f"{s:.2f}" for s in latencies))
    scenario.figure(
        "records produced after restarts, delivered", f"{delivered}/{produced} ({100 * delivered / produced:.0f}%)"
    )
    scenario.figure("order per device / duplicates", "in order / 0")
    scenario.figure("clients connected throughout", f"2 of 2; {len(pings)} keep-alives")
    scenario.figure(
        "restart noticed by: probe / broken connection",
        f"{log_text.count('Lost the Kafka broker')} / {log_text.count('broke and was made again')}",
    )
    scenario.figure("partition logs found replaced, read from start", str(log_text.count("the log no longer holds")))
    scenario.figure("broker_reconnects counted", str(counters["broker_reconnects"]))
    scenario.figure("partitions after the last restart", f"{body['assigned_partitions']}/{body['total_partitions']}")
    assert median < 3.0
    assert delivered == produced
