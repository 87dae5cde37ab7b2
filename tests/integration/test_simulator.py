"""The GPS fleet simulator: plausible tracks around Querétaro, in the
brief's record format, delivered to a real broker."""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid

from support import consume, free_port

from siscom.dev.broker import create_topics
from siscom.dev.simulator import QUERETARO, FleetSimulator, device_ids, run_simulator

START = 1_760_748_676.0  # 2025-10-18 00:51:16 UTC, the brief's GPS_DATETIME


def decode(records: list[tuple[str, bytes]]) -> dict[str, dict]:
    return {device_id: json.loads(value) for device_id, value in records}


def metres_between(a: dict, b: dict) -> float:
    lat1, lon1 = float(a["LATITUD"]), float(a["LONGITUD"])
    lat2, lon2 = float(b["LATITUD"]), float(b["LONGITUD"])
    north = (lat2 - lat1) * 111_320
    east = (lon2 - lon1) * 111_320 * math.cos(math.radians(lat1))
    return math.hypot(north, east)


def test_device_ids_are_ten_digits_stable_and_start_at_the_brief_example():
    fleet = FleetSimulator(3)
    assert fleet.device_ids == ["0848086072", "0848086073", "0848086074"]
    assert FleetSimulator(3, seed=0).device_ids == fleet.device_ids
    assert all(re.fullmatch(r"\d{10}", d) for d in device_ids(100, seed=7))
    assert set(device_ids(100, seed=1)).isdisjoint(device_ids(100, seed=2))
    for _ in range(3):
        assert [d for d, _ in fleet.step(START)] == fleet.device_ids


def test_same_seed_and_times_give_the_same_records():
    one, two, other = FleetSimulator(5, seed=3), FleetSimulator(5, seed=3), FleetSimulator(5, seed=4)
    for second in range(20):
        records = one.step(START + second)
        assert records == two.step(START + second)
        assert [v for _, v in records] != [v for _, v in other.step(START + second)]


def test_records_have_the_shape_of_the_brief():
    [(device_id, value)] = FleetSimulator(1).step(START)
    record = json.loads(value)

    assert set(record) == {"data", "decoded", "metadata", "raw", "uuid"}
    data = record["data"]
    assert data["DEVICE_ID"] == device_id == "0848086072"
    assert re.fullmatch(r"\+20\.\d{6}", data["LATITUD"])
    assert re.fullmatch(r"-100\.\d{6}", data["LONGITUD"])
    assert re.fullmatch(r"\d+\.\d{2}", data["SPEED"])
    assert data["GPS_DATETIME"] == "2025-10-18 00:51:16"
    assert data["ENGINE_STATUS"] in {"ON", "OFF"}
    assert 4 <= int(data["SATELLITES"]) <= 14
    assert all(isinstance(v, str) for v in data.values())
    assert record["metadata"]["producer_ts_ms"] == int(START * 1000)
    assert uuid.UUID(record["uuid"]).version == 4
    assert device_id in record["raw"]


def test_vehicles_drive_smoothly_and_stay_near_queretaro():
    fleet = FleetSimulator(40, seed=11)
    first = previous = decode(fleet.step(START))
    travelled = dict.fromkeys(first, 0.0)
    top_speed = 0.0
    for second in range(1, 601):
        current = decode(fleet.step(START + second))
        for device_id, record in current.items():
            before, now = previous[device_id]["data"], record["data"]
            step = metres_between(before, now)
            travelled[device_id] += step
            top_speed = max(top_speed, float(now["SPEED"]))
            # One second at up to 90 km/h (25 m), no teleporting.
            assert step <= 26.0, (device_id, second, before, now)
            assert abs(float(now["SPEED"]) - float(before["SPEED"])) <= 15.0
            turn = abs((int(now["HEADING"]) - int(before["HEADING"]) + 180) % 360 - 180)
            assert turn <= 31
            centre = {"LATITUD": str(QUERETARO[0]), "LONGITUD": str(QUERETARO[1])}
            assert metres_between(centre, now) < 8_000
        previous = current

    moving = [d for d, metres in travelled.items() if metres > 500]
    assert len(moving) >= 0.9 * len(travelled), travelled
    assert top_speed > 30
    engines = {r["data"]["ENGINE_STATUS"] for r in previous.values()}
    assert "ON" in engines


def test_a_parked_vehicle_reports_engine_off_and_does_not_move():
    fleet = FleetSimulator(40, seed=11)
    history = [decode(fleet.step(START + s)) for s in range(0, 900, 5)]
    parked_pairs = [
        (a[d]["data"], b[d]["data"])
        for a, b in zip(history, history[1:])
        for d in a
        if a[d]["data"]["ENGINE_STATUS"] == "OFF" and b[d]["data"]["ENGINE_STATUS"] == "OFF"
    ]
    assert parked_pairs, "nobody parked in 15 minutes"
    for before, after in parked_pairs:
        assert after["SPEED"] == "0.00"
        assert (after["LATITUD"], after["LONGITUD"]) == (before["LATITUD"], before["LONGITUD"])
        assert after["HEADING"] == before["HEADING"]  # cars do not spin in place


def test_step_can_report_a_subset_of_the_fleet():
    fleet = FleetSimulator(10)
    records = fleet.step(START, which=[2, 7])
    assert [d for d, _ in records] == ["0848086074", "0848086079"]


def test_alerts_name_the_device_and_a_kind():
    fleet = FleetSimulator(4)
    fleet.step(START)
    device_id, value = fleet.alert(START + 1, 3)
    data = json.loads(value)["data"]
    assert device_id == data["DEVICE_ID"] == "0848086075"
    assert data["ALERT"] in {"SPEEDING", "HARSH_BRAKING", "HARSH_ACCELERATION", "GEOFENCE_EXIT", "IGNITION_OFF"}


async def test_run_simulator_delivers_positions_and_alerts_keyed_by_device(broker, topic, alerts_topic):
    report = await asyncio.wait_for(
        run_simulator(
            broker.bootstrap,
            topic,
            devices=5,
            rate=500,
            limit=40,
            alerts_topic=alerts_topic,
            alert_every=10,
        ),
        timeout=30,
    )
    assert (report.positions, report.alerts, report.reconnects) == (40, 4, 0)

    positions = await consume(broker.bootstrap, topic, 41, timeout=1.0)
    assert len(positions) == 40  # and not one more
    for record in positions:
        assert record.key.decode() == json.loads(record.value)["data"]["DEVICE_ID"]
    assert {r.key.decode() for r in positions} == set(device_ids(5))

    alerts = await consume(broker.bootstrap, alerts_topic, 4)
    assert len(alerts) == 4
    assert all("ALERT" in json.loads(r.value)["data"] for r in alerts)


async def test_run_simulator_never_exceeds_its_rate(broker, topic):
    rate, duration = 20.0, 0.5
    report = await run_simulator(broker.bootstrap, topic, devices=3, rate=rate, duration=duration)
    # One record may go at once; the rest is earned at `rate`.
    assert 1 <= report.positions <= 1 + rate * duration


async def test_run_simulator_ends_when_stop_is_set(broker, topic):
    stop = asyncio.Event()
    running = asyncio.ensure_future(run_simulator(broker.bootstrap, topic, devices=3, rate=100, stop=stop))
    records = await consume(broker.bootstrap, topic, 5)
    assert len(records) == 5
    stop.set()
    report = await asyncio.wait_for(running, timeout=10)
    assert report.positions >= 5


async def test_run_simulator_waits_for_a_broker_that_starts_late(broker_factory):
    port = free_port()
    running = asyncio.ensure_future(run_simulator(f"127.0.0.1:{port}", "late", devices=2, rate=100, limit=10))
    await asyncio.sleep(0.5)
    assert not running.done()

    late = broker_factory(port=port)
    await create_topics(late.bootstrap, ["late"])
    report = await asyncio.wait_for(running, timeout=30)
    assert report.positions == 10
    assert report.reconnects >= 1
    assert len(await consume(late.bootstrap, "late", 10)) == 10


async def test_run_simulator_keeps_going_after_the_broker_restarts(broker_factory):
    broker = broker_factory()
    await create_topics(broker.bootstrap, ["fleet"])
    stop = asyncio.Event()
    running = asyncio.ensure_future(run_simulator(broker.bootstrap, "fleet", devices=3, rate=50, stop=stop))
    try:
        assert len(await consume(broker.bootstrap, "fleet", 5)) == 5

        broker.kill()
        broker.start()  # same port, empty log
        await create_topics(broker.bootstrap, ["fleet"])

        after = await consume(broker.bootstrap, "fleet", 5, timeout=30)
        assert len(after) == 5
        assert not running.done()
    finally:
        stop.set()
        report = await asyncio.wait_for(running, timeout=15)
    assert report.positions >= 10
