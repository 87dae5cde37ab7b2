"""The viewport index, the field projection and the rate slots: pure parts of map subscriptions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siscom.core.deliveries import Delivery
from siscom.core.fields import Projections, parse_fields
from siscom.core.geo import BBox
from siscom.core.protocol import BadRequest, message_frame
from siscom.core.throttle import Throttle
from siscom.core.viewport import ViewportIndex

lons = st.floats(min_value=-180, max_value=180, allow_nan=False)
lats = st.floats(min_value=-90, max_value=90, allow_nan=False)


@st.composite
def boxes(draw) -> BBox:
    lat1, lat2 = sorted((draw(lats), draw(lats)))
    if draw(st.booleans()):  # small boxes, the usual map view
        lon = draw(lons)
        lat = draw(lats)
        size = draw(st.floats(min_value=0, max_value=2))
        return BBox(lon, max(-90, lat - size), min(180, lon + size), min(90, lat + size))
    return BBox(draw(lons), lat1, draw(lons), lat2)


class Watcher:
    def __init__(self) -> None:
        self.got: list[str] = []
        self.left: list[str] = []

    def deliver_in_view(self, delivery: Delivery, now: float) -> None:
        self.got.append(delivery.device_id)

    def leave_view(self, device_id: str) -> None:
        self.left.append(device_id)


def watched(box_list: list[BBox]) -> tuple[ViewportIndex, list[Watcher]]:
    """An index with one watcher per box."""
    index = ViewportIndex(lambda: [])
    watchers = [Watcher() for _ in box_list]
    for watcher, box in zip(watchers, box_list):
        index.watch(watcher, box)
    return index, watchers


def assert_found_exactly(index: ViewportIndex, watchers: list[Watcher], box_list: list[BBox], points) -> None:
    """The index finds at each point the watchers whose box holds it, as a check of every box does."""
    for lat, lon in points:
        expected = {id(w) for w, box in zip(watchers, box_list) if box.contains(lat, lon)}
        assert {id(w) for w in index.watchers_at(lat, lon)} == expected


@settings(max_examples=200)
@given(st.lists(boxes(), min_size=1, max_size=30), st.lists(st.tuples(lats, lons), min_size=1, max_size=30))
def test_the_index_finds_exactly_the_boxes_that_contain_a_point(box_list, points):
    """Whatever the boxes (tiny, huge, across the antimeridian), the grid agrees with a check of
    every box."""
    index, watchers = watched(box_list)
    assert_found_exactly(index, watchers, box_list, points)


@settings(max_examples=100)
@given(boxes(), st.lists(st.tuples(lats, lons), min_size=1, max_size=50))
def test_the_devices_in_a_box_are_those_whose_newest_position_is_there(box, points):
    index = ViewportIndex(lambda: [])
    index.watch(Watcher(), BBox(-180, -90, 180, 90))
    index.route([Delivery(f"d{i}", "x", False, 0, point) for i, point in enumerate(points)], 0.0)
    expected = {f"d{i}" for i, (lat, lon) in enumerate(points) if box.contains(lat, lon)}
    assert set(index.devices_in(box)) == expected


def test_a_device_crossing_the_edge_enters_and_leaves_once_each_and_alerts_follow_it():
    index = ViewportIndex(lambda: [])
    inside, outside = Watcher(), Watcher()
    index.watch(inside, BBox(-1, -1, 1, 1))
    index.watch(outside, BBox(10, 10, 11, 11))
    index.route(
        [
            Delivery("v", "p1", False, 0, (0.5, 0.5)),
            Delivery("v", "a1", True, 0, None),
            Delivery("v", "p2", False, 0, (5.0, 5.0)),
            Delivery("v", "a2", True, 0, None),
            Delivery("v", "p3", False, 0, None),  # no position: in no box, not moved
        ],
        0.0,
    )
    assert inside.got == ["v", "v"] and inside.left == ["v"]
    assert outside.got == [] and outside.left == []


def test_an_unwatched_index_forgets_positions_and_a_new_watch_starts_from_the_last_known():
    known = [("a", (0.0, 0.0)), ("b", (50.0, 50.0))]
    index = ViewportIndex(lambda: known)
    watcher = Watcher()
    index.watch(watcher, BBox(-1, -1, 1, 1))
    assert index.devices_in(BBox(-1, -1, 1, 1)) == ["a"]
    index.unwatch(watcher)
    assert not index.active and index.position_of("a") is None


def test_the_reduced_text_is_built_once_per_field_set_and_shared_by_every_client():
    projections = Projections()
    fields = parse_fields("SPEED,LATITUD,LONGITUD,GPS_DATETIME,LATITUD", max_fields=10)
    assert fields == ("GPS_DATETIME", "LATITUD", "LONGITUD", "SPEED")
    clients = [projections.get(fields) for _ in range(100)]
    assert all(client is clients[0] for client in clients)
    record = {
        "data": {
            "DEVICE_ID": "0848086072",
            "LATITUD": "+20.652472",
            "LONGITUD": "-100.391423",
            "SPEED": 42,
            "GPS_DATETIME": "2026-12-01 18:00:00",
            "ODOMETER": 1,
        }
    }
    frame = message_frame(json.dumps(record))
    texts = [client.reduce("0848086072", frame) for client in clients]
    assert all(text is texts[0] for text in texts)
    assert clients[0].builds == 1
    assert texts[0] == (
        '{"event":"message","data":{"data":{"GPS_DATETIME":"2026-12-01 18:00:00","LATITUD":"+20.652472",'
        '"LONGITUD":"-100.391423","SPEED":42,"DEVICE_ID":"0848086072"}}}'
    )
    other = projections.get(("SPEED",))
    assert (
        other.reduce("0848086072", frame) == '{"event":"message","data":{"data":{"SPEED":42,"DEVICE_ID":"0848086072"}}}'
    )
    next_frame = message_frame(json.dumps({"device_id": "x7", "data": {"SPEED": 1}}))
    assert clients[5].reduce("x7", next_frame) == '{"event":"message","data":{"data":{"SPEED":1,"device_id":"x7"}}}'
    assert clients[0].builds == 2


@pytest.mark.parametrize("raw", ["", ",", "A,B,C,D", "bad name", "x" * 65, "a,<b>"])
def test_bad_field_lists_are_refused(raw):
    with pytest.raises(BadRequest):
        parse_fields(raw, max_fields=3)


def test_a_slot_per_device_passes_one_position_per_interval_and_keeps_the_newest_waiting():
    throttle = Throttle(max_hz=1)
    assert throttle.offer("a", "a0", 0.0)
    assert throttle.offer("b", "b0", 0.1)  # another device has its own slot
    assert not throttle.offer("a", "a1", 0.2)
    assert not throttle.offer("a", "a2", 0.5)
    assert throttle.conflated == 1 and throttle.next_due() == 1.0
    assert throttle.release(0.99) == []
    assert throttle.release(1.0) == [("a", "a2")]
    assert not throttle.offer("a", "a3", 1.5)  # the released one took the slot until 2.0
    throttle.drop("a")
    assert throttle.release(2.0) == [] and throttle.next_due() is None
    assert throttle.offer("a", "a4", 2.0)


@settings(max_examples=100)
@given(
    st.lists(boxes(), min_size=1, max_size=8),
    st.lists(st.tuples(st.sampled_from("abc"), lats, lons), min_size=1, max_size=40),
)
def test_a_watcher_is_told_of_a_leave_exactly_when_a_device_it_had_in_view_moves_out(box_list, moves):
    """Leaves come from the geometry alone (nothing is kept per device and watcher): the same
    as a model that remembers who saw what."""
    index = ViewportIndex(lambda: [])
    watchers = [Watcher() for _ in box_list]
    for watcher, box in zip(watchers, box_list):
        index.watch(watcher, box)
    in_view: dict[int, set[str]] = {id(w): set() for w in watchers}
    expected_left: dict[int, list[str]] = {id(w): [] for w in watchers}
    for device_id, lat, lon in moves:
        index.route([Delivery(device_id, "x", False, 0, (lat, lon))], 0.0)
        for watcher, box in zip(watchers, box_list):
            shown = in_view[id(watcher)]
            if box.contains(lat, lon):
                shown.add(device_id)
            elif device_id in shown:
                shown.discard(device_id)
                expected_left[id(watcher)].append(device_id)
    assert {id(w): w.left for w in watchers} == expected_left


WORLD = BBox(-180, -90, 180, 90)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(boxes(), st.just(WORLD), st.just(BBox(-180, -90, 0, 90)), st.just(BBox(100, -90, -100, 90))),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.tuples(lats, lons), min_size=1, max_size=20),
    st.lists(st.tuples(lats, lons), min_size=1, max_size=20),
)
def test_boxes_filed_as_covering_their_cells_are_found_and_left_exactly(box_list, points, moves):
    """Boxes as large as the world (or half of it, or across the antimeridian) skip the exact
    check in the cells they cover: lookups and leaves still agree with a check of every box."""
    index, watchers = watched(box_list)
    assert_found_exactly(index, watchers, box_list, points)
    for (lat, lon), (lat2, lon2) in zip(points, moves):
        left = {id(w) for w, box in zip(watchers, box_list) if box.contains(lat, lon) and not box.contains(lat2, lon2)}
        assert {id(w) for w in index._leavers((lat, lon), (lat2, lon2))} == left


def test_a_box_larger_than_its_cells_is_found_without_a_check_like_a_subscription_to_every_device():
    """1,000 clients of the world box and one small box: a lookup near the small box's edge
    checks the small box alone; one inside a cell it covers checks nothing."""
    index = ViewportIndex(lambda: [])
    world = [Watcher() for _ in range(1000)]
    for watcher in world:
        index.watch(watcher, WORLD)
    small = Watcher()
    index.watch(small, BBox(-100.5, 20.5, -100.4, 20.6))
    assert index.candidates_at(20.599, -100.401) == 1 and len(index.watchers_at(20.599, -100.401)) == 1001
    assert index.candidates_at(20.55, -100.45) == 0 and len(index.watchers_at(20.55, -100.45)) == 1001
    assert index.candidates_at(-33.9, 151.2) == 0 and len(index.watchers_at(-33.9, 151.2)) == 1000
