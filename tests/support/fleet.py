"""A parked fleet and what a new dashboard sees of it (the warm-start tests)."""

from __future__ import annotations

import json

from .kafka import produce
from .ws import ws_client


def record(device_id: str, seq: int, lat: float = 19.4, lon: float = -99.1) -> bytes:
    """A position of ``device_id``, numbered ``seq``, at ``lat``, ``lon``."""
    return json.dumps({"data": {"DEVICE_ID": device_id, "SEQ": seq, "LATITUD": lat, "LONGITUD": lon}}).encode()


def parked_at(vehicle: int) -> tuple[float, float]:
    """Where ``veh-N`` parks: one vehicle every 0.01 degree of latitude north of 20."""
    return 20.0 + vehicle / 100, -100.0


async def park_fleet(bootstrap: str, topic: str, vehicles: int, partitions: int) -> dict[str, int]:
    """Every vehicle reports twice, its two reports on different partitions; then one more record
    on every partition (the test broker's log end can lag after a burst until the next write).
    Returns each device's newest SEQ."""
    for partition in range(partitions):
        first = [record(f"veh-{v}", 1, *parked_at(v)) for v in range(vehicles) if v % partitions == partition]
        await produce(bootstrap, topic, first, partition=partition)
    for partition in range(partitions):
        second = [record(f"veh-{v}", 2, *parked_at(v)) for v in range(vehicles) if (v + 1) % partitions == partition]
        await produce(bootstrap, topic, second, partition=partition)
    for partition in range(partitions):
        await produce(bootstrap, topic, [record(f"marker-{partition}", 0)], partition=partition)
    newest = {f"veh-{v}": 2 for v in range(vehicles)}
    newest.update({f"marker-{p}": 0 for p in range(partitions)})
    return newest


async def snapshot_of(url: str, quiet: float = 1.0) -> list[tuple[str, int]]:
    """(device, SEQ) of the frames a new client of ``url`` gets before its stream falls quiet."""
    frames = []
    async with ws_client(url) as client:
        while True:
            try:
                frame = await client.next_frame(timeout=quiet)
            except TimeoutError:
                return frames
            assert frame["event"] == "message", frame
            frames.append((frame["data"]["data"]["DEVICE_ID"], frame["data"]["data"]["SEQ"]))
