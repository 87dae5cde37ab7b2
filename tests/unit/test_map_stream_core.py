"""The map stream core: a box with enter/leave and panning, rate slots and field sets, without I/O."""

from __future__ import annotations

import gc
import json

from siscom.core import cursors
from siscom.core.deliveries import Delivery
from siscom.core.geo import BBox
from siscom.core.mapoptions import MapOptions
from siscom.core.mapstream import MapStreamCore
from siscom.core.protocol import alert_frame, message_frame, with_cursor
from siscom.core.stream import StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.window import RecentWindow

POLICY = StreamPolicy(keepalive_seconds=60.0, max_pending_frames=100, max_device_ids=10, snapshot=True)


def position(device_id: str, n: int, lat: float, lon: float) -> Delivery:
    text = message_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n, "LATITUD": lat, "LONGITUD": lon}}))
    return Delivery(device_id, text, False, 0, (lat, lon))


def route(table: SubscriptionTable, *deliveries: Delivery, now: float = 0.0) -> None:
    """What the router does with a batch, routed at ``now``."""
    for delivery in deliveries:
        if not delivery.alert:
            table.remember(delivery)
        named, everything = table.subscribers_of(delivery.device_id)
        for subscriber in [*named, *everything]:
            subscriber.deliver(delivery, now)
    if table.viewports.active:
        table.viewports.route(deliveries, now)


def frames(core: StreamCore, now: float = 0.0) -> list[tuple[str, object]]:
    out = []
    while texts := core.take(now):
        for text in texts:
            frame = json.loads(text)
            data = frame["data"]
            if frame["event"] == "leave":
                out.append(("leave", data["device_id"]))
            elif frame["event"] == "ack":
                out.append(("ack", data.get("bbox")))
            else:
                out.append((frame["event"], data["data"].get("N", data["data"].get("DEVICE_ID"))))
    return out


def map_core(table, ids=None, **options) -> MapStreamCore:
    core = MapStreamCore(ids, table=table, policy=POLICY, options=MapOptions(**options))
    core.open(0.0)
    return core


def test_a_box_client_sees_only_what_is_in_its_box_with_one_leave_per_exit():
    table = SubscriptionTable()
    plain = StreamCore(None, table=table, policy=POLICY)
    plain.open(0.0)
    core = map_core(table, bbox=BBox(0, 0, 1, 1))
    route(
        table,
        position("a", 1, 0.5, 0.5),
        position("b", 2, 5, 5),
        position("a", 3, 2, 2),
        position("a", 4, 3, 3),
        position("a", 5, 0.2, 0.2),
    )
    assert frames(core) == [("message", 1), ("leave", "a"), ("message", 5)]
    assert [n for _, n in frames(plain)] == [1, 2, 3, 4, 5]


def test_panning_acks_then_sends_newly_visible_positions_then_leaves():
    table = SubscriptionTable()
    core = map_core(table, bbox=BBox(0, 0, 1, 1))
    route(table, position("a", 1, 0.5, 0.5), position("b", 2, 0.5, 1.5), position("c", 3, 0.6, 0.6))
    frames(core)
    core.receive(json.dumps({"action": "subscribe", "bbox": [0.4, 0, 2, 1]}), 0.0)
    assert frames(core) == [("ack", [0.4, 0, 2, 1]), ("message", 2)]
    core.receive(json.dumps({"action": "subscribe", "bbox": [1, 0, 2, 1]}), 0.0)
    assert frames(core) == [("ack", [1, 0, 2, 1]), ("leave", "a"), ("leave", "c")]
    core.receive(json.dumps({"action": "subscribe", "bbox": [0, 10, 1, 5]}), 0.0)
    assert json.loads(core.take(0.0)[0])["event"] == "error"
    assert core.closing is None


def test_a_box_with_device_ids_needs_both_and_alerts_pass_whole():
    table = SubscriptionTable()
    core = map_core(table, ids=frozenset({"a"}), bbox=BBox(0, 0, 1, 1), fields=("N",))
    route(table, position("a", 1, 0.5, 0.5), position("b", 2, 0.5, 0.5))
    alert = Delivery("a", alert_frame('{"data":{"DEVICE_ID":"a","KIND":"panic"}}'), True, 0)
    route(table, alert)
    texts = core.take(0.0)
    assert texts == ['{"event":"message","data":{"data":{"N":1,"DEVICE_ID":"a"}}}', alert.text]


def test_max_hz_sends_the_newest_position_when_the_slot_frees_and_never_holds_alerts():
    table = SubscriptionTable()
    now = [0.0]
    core = map_core(table, ids=frozenset({"a"}), max_hz=1.0)
    sent = []
    for tick in range(100):  # 10 Hz for 10 s
        now[0] = tick / 10
        route(table, position("a", tick, 0, 0), now=now[0])
        if tick % 25 == 0:
            route(
                table,
                Delivery("a", alert_frame(f'{{"data":{{"DEVICE_ID":"a","N":{1000 + tick}}}}}'), True, 0),
                now=now[0],
            )
        sent += frames(core, now[0])
    now[0] = 10.0
    assert core.wait_time(9.95) <= 0.05 + 1e-9
    sent += frames(core, 10.0)
    positions = [n for kind, n in sent if kind == "message"]
    alerts = [n for kind, n in sent if kind == "alert"]
    assert len(positions) in (10, 11) and positions[-1] == 99
    assert alerts == [1000, 1025, 1050, 1075]


def test_a_device_known_from_the_snapshot_or_a_pan_that_moves_out_on_its_next_report_gets_a_leave():
    """Devices a client got from its snapshot (or a pan) were never routed to it live; their
    first move out must still be told."""
    table = SubscriptionTable()
    route(table, position("a", 1, 0.5, 0.5), position("b", 2, 0.5, 3.5))
    other = map_core(table, bbox=BBox(50, 50, 51, 51))  # keeps the index tracking
    core = map_core(table, bbox=BBox(0, 0, 1, 1))
    assert frames(core) == [("message", 1)]
    route(table, position("a", 3, 5, 5))
    assert frames(core) == [("leave", "a")]
    core.receive(json.dumps({"action": "subscribe", "bbox": [3, 0, 4, 1]}), 0.0)
    assert frames(core) == [("ack", [3, 0, 4, 1]), ("message", 2)]
    route(table, position("b", 4, 9, 9))
    assert frames(core) == [("leave", "b")]
    assert frames(other) == []


def test_for_a_client_that_fell_behind_a_device_that_leaves_and_comes_back_ends_in_view():
    """Behind, positions wait newest-per-device in their first place; the one waiting when the
    device leaves must not be replaced by its return, ahead of the leave."""
    table = SubscriptionTable()
    policy = StreamPolicy(keepalive_seconds=60.0, max_pending_frames=3, max_device_ids=10, snapshot=False)
    core = MapStreamCore(None, table=table, policy=policy, options=MapOptions(bbox=BBox(0, 0, 1, 1)))
    core.open(0.0)
    route(table, *(position(f"x{n}", n, 0.5, 0.5) for n in range(4)))  # past the soft limit: behind
    route(table, position("a", 10, 0.5, 0.5), position("a", 11, 5, 5), position("a", 12, 0.6, 0.6))
    events = [(kind, n) for kind, n in frames(core) if n in ("a", 10, 11, 12)]
    assert events == [("leave", "a"), ("message", 12)]


def alert(device_id: str, n: int) -> Delivery:
    return Delivery(device_id, alert_frame(json.dumps({"data": {"DEVICE_ID": device_id, "N": n}})), True, 0)


def test_a_resumed_box_stream_gets_its_alerts_and_each_devices_newest_position_in_log_order():
    """The replay is what a map needs: alerts exact, one position per device (the newest), a
    leave where the client may have shown a device now out of view."""
    table = SubscriptionTable()
    box = BBox(0, 0, 1, 1)
    replay = [
        position("a", 1, 0.5, 0.5),
        alert("a", 2),
        position("b", 3, 0.5, 0.5),
        position("a", 4, 0.6, 0.6),
        position("b", 5, 3, 3),
        alert("b", 6),
        position("c", 7, 3, 3),
        alert("c", 8),
    ]
    route(table, *replay)  # the live view is where the replay ends
    core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(bbox=box))
    core.open(0.0, replay=replay, cursor="c")
    assert frames(core) == [("alert", 2), ("message", 4), ("leave", "b")]
    named = MapStreamCore(frozenset("abc"), table=table, policy=POLICY, options=MapOptions(bbox=box))
    named.open(0.0, replay=replay, cursor="c")
    assert frames(named)[-1] == ("leave", "c"), "a stream naming its devices: a leave for each out of view"


def test_a_resumed_stream_with_a_rate_and_fields_gets_one_reduced_position_per_device():
    table = SubscriptionTable()
    replay = [position("a", n, 0.5, 0.5) for n in range(5)] + [alert("a", 9)] + [position("b", 10, 5, 5)]
    core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(max_hz=1.0, fields=("N",)))
    core.open(0.0, replay=replay, cursor="c")
    texts = [json.loads(text) for text in core.take(0.0)]
    assert [(t["event"], t["data"]["data"]) for t in texts] == [
        ("message", {"N": 4, "DEVICE_ID": "a"}),
        ("alert", {"DEVICE_ID": "a", "N": 9}),
        ("message", {"N": 10, "DEVICE_ID": "b"}),
    ]


def test_a_position_released_from_its_rate_slot_carries_the_dispatch_cursor_so_a_resume_repeats_no_alert():
    """An alert routed after a held position goes out first; the position, released later,
    must not take the client's cursor back before the alert."""
    table = SubscriptionTable()
    window = RecentWindow(max_records=100, max_bytes=100_000)
    now = [0.0]
    core = MapStreamCore(None, table=table, policy=POLICY, options=MapOptions(max_hz=1.0), window=window)
    core.open(0.0)

    def routed(delivery: Delivery, offset: int) -> None:
        text = with_cursor(delivery.text, cursors.encode(0, ((offset + 1,),)))
        delivery = delivery._replace(text=text, topic_index=0, partition=0, offset=offset)
        route(table, delivery, now=now[0])
        window.extend([delivery])
        window.routed(delivery)

    routed(position("a", 0, 0.5, 0.5), 0)
    routed(position("a", 1, 0.5, 0.5), 1)  # held: a's slot is taken for a second
    routed(alert("a", 2), 2)
    first = [json.loads(text) for text in core.take(0.1)]
    assert [(f["event"], f["data"]["data"]["N"]) for f in first] == [("message", 0), ("alert", 2)]
    now[0] = 1.5
    (released,) = [json.loads(text) for text in core.take(1.5)]
    assert released["data"]["data"]["N"] == 1
    assert cursors.decode(released["id"])[1] == ((3,),), "past the alert: resuming from it does not repeat it"


def test_a_position_waiting_for_its_rate_slot_is_dropped_when_its_device_leaves_the_box():
    """Held by ``max_hz`` and then out of the box: released later, it would show a device the
    client was just told had left."""
    table = SubscriptionTable()
    now = [0.0]
    core = map_core(table, bbox=BBox(0, 0, 1, 1), max_hz=1.0)
    sent = []
    for t, n, lat, lon in ((0.0, 1, 0.5, 0.5), (0.1, 2, 0.6, 0.6), (0.2, 3, 5, 5)):
        now[0] = t
        route(table, position("a", n, lat, lon), now=now[0])
        sent += frames(core, t)
    assert sent == [("message", 1), ("leave", "a")]
    for t in (1.0, 1.5, 2.0, 5.0):  # past every slot the held position could have waited for
        now[0] = t
        assert frames(core, t) == []
    assert core.wait_time(5.0) > 1.0, "nothing left waiting for a slot"


def test_box_clients_that_left_leave_no_stream_core_behind_while_the_devices_they_saw_stay_quiet():
    """Parked devices never report again: nothing the index keeps for them may hold a client
    that has left (through its ``alarm`` it would hold the session and the transport too)."""
    table = SubscriptionTable()
    world = BBox(-180, -90, 180, 90)
    route(table, *(position(f"parked{n}", n, 20 + n / 1000, -100) for n in range(200)))
    keeper = map_core(table, bbox=world)
    for n in range(300):
        departed = map_core(table, bbox=world if n % 2 else BBox(-101, 19, -99, 21))
        departed.end()
    route(table, position("mover", 1, 20.5, -100.5))  # a live device still routes: the index works
    del departed
    gc.collect()
    assert sum(isinstance(thing, MapStreamCore) for thing in gc.get_objects()) == 1
    assert [n for _, n in frames(keeper)][-1] == 1


def test_a_pan_looks_at_the_devices_that_enter_or_leave_not_at_every_device_in_view(monkeypatch):
    """12,000 devices on a 0.01-degree lattice, 10,000 of them in the box; a pan of 0.02 degrees
    east brings 200 in and takes 200 out: the devices checked against a box are a small multiple
    of those 400, not the 10,000 in view."""
    table = SubscriptionTable()
    route(table, *(position(f"d{x}.{y}", 0, 0.005 + y / 100, 0.005 + x / 100) for x in range(120) for y in range(100)))
    roomy = StreamPolicy(keepalive_seconds=60.0, max_pending_frames=100_000, max_device_ids=10, snapshot=True)
    core = MapStreamCore(None, table=table, policy=roomy, options=MapOptions(bbox=BBox(0, 0, 1, 1)))
    core.open(0.0)
    assert len(frames(core)) == 10_000
    checks = [0]
    contains = BBox.contains

    def counted(box: BBox, lat: float, lon: float) -> bool:
        checks[0] += 1
        return contains(box, lat, lon)

    monkeypatch.setattr(BBox, "contains", counted)
    core.receive(json.dumps({"action": "subscribe", "bbox": [0.02, 0, 1.02, 1]}), 0.0)
    got = frames(core)
    assert got[0] == ("ack", [0.02, 0, 1.02, 1])
    assert sorted(n for kind, n in got if kind == "leave") == sorted(f"d{x}.{y}" for x in range(2) for y in range(100))
    assert len([kind for kind, _ in got if kind == "message"]) == 200
    assert checks[0] <= 4 * 400, f"{checks[0]} checks for a pan that changed 400 devices"
