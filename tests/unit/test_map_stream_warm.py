"""A map stream opened before the process warmed up gets its box's snapshot once it has."""

from __future__ import annotations

import json

from siscom.core.deliveries import Delivery
from siscom.core.geo import BBox
from siscom.core.mapoptions import MapOptions
from siscom.core.mapstream import MapStreamCore
from siscom.core.protocol import message_frame
from siscom.core.stream import StreamPolicy
from siscom.core.subscriptions import SubscriptionTable

POLICY = StreamPolicy(keepalive_seconds=60.0, max_pending_frames=100, max_device_ids=10, snapshot=True)


def position(device_id: str, n: int, lat: float, lon: float) -> Delivery:
    text = message_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n, "LATITUD": lat, "LONGITUD": lon}}))
    return Delivery(device_id, text, False, 0, (lat, lon))


def numbers(core: MapStreamCore) -> list[int]:
    out = []
    while texts := core.take(0.0):
        out += [json.loads(text)["data"]["data"]["N"] for text in texts if json.loads(text)["event"] == "message"]
    return out


def test_a_box_stream_opened_cold_gets_the_devices_in_its_box_once_the_process_warms() -> None:
    table = SubscriptionTable()
    core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(bbox=BBox(0, 0, 1, 1)))
    core.open(0.0)
    assert numbers(core) == []  # opened cold: nothing known yet
    for delivery in (position("a", 1, 0.5, 0.5), position("b", 2, 5, 5), position("c", 3, 0.2, 0.7)):
        table.remember(delivery)
    table.viewports.take_remembered()  # what the warm start does once it has remembered them all
    core.warm_snapshot(0.0)
    assert sorted(numbers(core)) == [1, 3]  # what lies in its box, not b


def test_a_device_the_warm_start_placed_in_a_box_gets_its_leave_when_it_moves_out() -> None:
    table = SubscriptionTable()
    core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(bbox=BBox(0, 0, 1, 1)))
    core.open(0.0)
    table.remember(position("a", 1, 0.5, 0.5))
    table.viewports.take_remembered()
    core.warm_snapshot(0.0)
    assert numbers(core) == [1]
    moved = position("a", 2, 5, 5)
    table.remember(moved)
    table.viewports.route([moved], 0.0)
    texts = core.take(0.0)
    assert [json.loads(text)["event"] for text in texts] == ["leave"]
