"""Box arithmetic and the position parser: properties over many generated values, and the bad
values a client or a producer may send."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siscom.core.geo import BadBox, BBox, parse_bbox, position_of

lons = st.floats(min_value=-180, max_value=180, allow_nan=False)
lats = st.floats(min_value=-90, max_value=90, allow_nan=False)


@st.composite
def boxes(draw) -> BBox:
    lat1, lat2 = sorted((draw(lats), draw(lats)))
    return BBox(draw(lons), lat1, draw(lons), lat2)


@given(boxes(), lats, lons)
def test_a_box_contains_a_point_exactly_when_one_of_its_parts_does(box, lat, lon):
    """Across the antimeridian a box is two boxes; containment must agree with them."""
    parts = box.parts()
    assert all(not part.crosses_antimeridian for part in parts)
    assert box.contains(lat, lon) == any(part.contains(lat, lon) for part in parts)


@given(boxes(), lats, lons)
def test_a_point_in_a_box_lies_between_its_latitudes_and_inside_its_longitude_arc(box, lat, lon):
    inside = box.contains(lat, lon)
    if inside:
        assert box.min_lat <= lat <= box.max_lat
    # The arc east from min_lon to max_lon, measured in degrees east of min_lon. Exact arithmetic:
    # in floats, 360 minus a tiny longitude rounds to 360 and puts a point outside on the arc.
    min_lon, max_lon = Fraction(box.min_lon), Fraction(box.max_lon)
    width = max_lon - min_lon if min_lon <= max_lon else 360 - min_lon + max_lon
    east = (Fraction(lon) - min_lon) % 360
    in_arc = east <= width or lon in (box.min_lon, box.max_lon) or (abs(lon) == 180 and abs(box.max_lon) == 180)
    if box.min_lat <= lat <= box.max_lat and in_arc:
        assert inside
    if inside:
        assert in_arc


@given(boxes())
def test_a_box_round_trips_through_its_query_text(box):
    text = ",".join(repr(value) for value in box.as_list())
    assert parse_bbox(text) == box
    assert parse_bbox(box.as_list()) == box


def test_a_box_across_the_antimeridian_holds_both_sides_and_not_the_middle():
    box = parse_bbox("170,-10,-170,10")
    assert box.crosses_antimeridian
    assert box.contains(0, 175) and box.contains(0, -175) and box.contains(0, 180) and box.contains(0, -180)
    assert not box.contains(0, 0) and not box.contains(0, 160) and not box.contains(11, 175)
    assert box.width == pytest.approx(20)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1,2,3",
        "1,2,3,4,5",
        "a,b,c,d",
        "nan,0,1,1",
        "inf,0,1,1",
        "1e3,0,1,1",
        "-181,0,1,1",
        "0,0,181,1",
        "0,-91,1,1",
        "0,0,1,91",
        "0,10,1,5",
        " , , , ",
    ],
)
def test_bad_boxes_are_refused_with_a_message(raw):
    with pytest.raises(BadBox) as caught:
        parse_bbox(raw)
    assert "bbox" in str(caught.value)


@pytest.mark.parametrize("raw", [[1, 2, 3], [True, 0, 1, 1], ["1", 2, 3, None], {"a": 1}, 5, [float("nan"), 0, 1, 1]])
def test_bad_json_boxes_are_refused(raw):
    with pytest.raises(BadBox):
        parse_bbox(raw)


coordinate_text = st.floats(min_value=-90, max_value=90, allow_nan=False).map(lambda v: f"{v:+.6f}")


@given(coordinate_text, st.floats(min_value=-180, max_value=180, allow_nan=False).map(lambda v: f"{v:+.6f}"))
def test_the_briefs_signed_strings_parse_to_their_numbers(lat_text, lon_text):
    position = position_of({"data": {"LATITUD": lat_text, "LONGITUD": lon_text}})
    assert position == (float(lat_text), float(lon_text))


@given(lats, lons)
def test_numbers_parse_as_themselves_in_every_place_a_position_may_be(lat, lon):
    assert position_of({"data": {"LATITUD": lat, "LONGITUD": lon}}) == (lat, lon)
    assert position_of({"data": {"lat": lat, "lon": lon}}) == (lat, lon)
    assert position_of({"lat": lat, "lon": lon}) == (lat, lon)


@given(
    st.one_of(
        st.none(), st.booleans(), st.text(max_size=12), st.floats(), st.integers(), st.lists(st.integers(), max_size=2)
    )
)
def test_any_value_gives_a_valid_position_or_none(value):
    """Whatever a producer writes, the parser never raises and never returns an invalid position."""
    for document in ({"data": {"LATITUD": value, "LONGITUD": value}}, {"lat": value, "lon": value}):
        position = position_of(document)
        if position is not None:
            lat, lon = position
            assert math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


def test_the_first_valid_pair_wins():
    assert position_of({"data": {"LATITUD": "+20.652472", "LONGITUD": "-100.391423"}, "lat": 1, "lon": 2}) == (
        20.652472,
        -100.391423,
    )
    assert position_of({"data": {"LATITUD": "", "LONGITUD": "", "lat": 3, "lon": 4}}) == (3, 4)
    assert position_of({"data": {"LATITUD": "x"}, "lat": 5, "lon": 6}) == (5, 6)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"data": {}},
        {"data": {"LATITUD": "+20.6"}},
        {"data": {"LATITUD": "91", "LONGITUD": "0"}},
        {"data": {"LATITUD": "0", "LONGITUD": "-180.5"}},
        {"data": {"LATITUD": "nan", "LONGITUD": "0"}},
        {"data": {"LATITUD": True, "LONGITUD": 0}},
        {"data": "text", "lat": None, "lon": 1},
        {"data": {"lat": [1], "lon": 2}},
    ],
)
def test_records_without_a_valid_position_have_none(document):
    assert position_of(document) is None
