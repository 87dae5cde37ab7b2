"""Decoding record values: the text is kept unchanged, the device id found, bad values named."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siscom.core.devices import DEVICE_ID_PATTERN
from siscom.core.protocol import BadRequest, message_frame, parse_device_ids
from siscom.core.records import REASONS, Decoded, MalformedRecord, decode_value

LIMIT = 1 << 20

BRIEF_RECORD = (
    '{"data":{"DEVICE_ID":"0848086072","LATITUD":"+20.652472","LONGITUD":"-100.391423",'
    '"SPEED":"0.00","GPS_DATETIME":"2025-10-18 00:51:16","ENGINE_STATUS":"OFF","SATELLITES":"9"},'
    '"decoded":{},"metadata":{},"raw":"...","uuid":"u-1"}'
)


def reason_for(value: bytes | None, max_bytes: int = LIMIT) -> str:
    with pytest.raises(MalformedRecord) as caught:
        decode_value(value, max_bytes=max_bytes)
    assert caught.value.reason in REASONS
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def test_record_in_the_briefs_format_is_decoded():
    decoded = decode_value(BRIEF_RECORD.encode(), max_bytes=LIMIT)
    assert decoded == Decoded(device_id="0848086072", text=BRIEF_RECORD, position=(20.652472, -100.391423))


def test_text_is_the_value_unchanged_including_spacing_and_unicode():
    text = ' {\n  "device_id" : "a",\t"name": "Querétaro \\u00e9", "n": 1.50 } \n'
    assert decode_value(text.encode(), max_bytes=LIMIT).text == text


def test_malformed_record_is_a_value_error():
    assert issubclass(MalformedRecord, ValueError)


# -- where the device id comes from ---------------------------------------------------------------


@pytest.mark.parametrize(
    "document, expected",
    [
        ({"data": {"DEVICE_ID": "upper"}}, "upper"),
        ({"data": {"device_id": "lower"}}, "lower"),
        ({"device_id": "top"}, "top"),
        ({"data": {"DEVICE_ID": "upper", "device_id": "lower"}, "device_id": "top"}, "upper"),
        ({"data": {"device_id": "lower"}, "device_id": "top"}, "lower"),
        ({"data": "not an object", "device_id": "top"}, "top"),
        ({"data": {"DEVICE_ID": None}, "device_id": "top"}, "top"),
        ({"data": {"DEVICE_ID": ""}, "device_id": "top"}, "top"),
        ({"data": {"DEVICE_ID": True, "device_id": 7}}, "7"),
        ({"data": {"DEVICE_ID": 848086072}}, "848086072"),
        ({"device_id": -5}, "-5"),
        ({"device_id": "x" * 64}, "x" * 64),
        ({"device_id": "fleet-7:van_2.a"}, "fleet-7:van_2.a"),
    ],
)
def test_device_id_is_the_first_usable_candidate(document, expected):
    assert decode_value(json.dumps(document).encode(), max_bytes=LIMIT).device_id == expected


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"data": {}},
        {"DEVICE_ID": "only-in-the-wrong-place"},
        {"data": {"DEVICE_ID": ""}},
        {"data": {"DEVICE_ID": None}},
        {"data": {"DEVICE_ID": True}},
        {"data": {"DEVICE_ID": 1.5}},
        {"data": {"DEVICE_ID": ["a"]}},
        {"data": {"DEVICE_ID": {"id": "a"}}},
        {"data": [{"DEVICE_ID": "a"}]},
    ],
)
def test_record_without_usable_device_id_is_malformed(document):
    assert reason_for(json.dumps(document).encode()) == "no device id"


@pytest.mark.parametrize(
    "document",
    [
        {"device_id": "x" * 65},
        {"device_id": "x" * 257},
        {"device_id": "two words"},
        {"device_id": " padded"},
        {"device_id": "a/b"},
        {"device_id": "a,b"},
        {"device_id": "Querétaro"},
        {"device_id": "line\nbreak"},
        # The first id present decides: a bad DEVICE_ID is not replaced by a good device_id.
        {"data": {"DEVICE_ID": "not ok!", "device_id": "ok"}},
    ],
)
def test_record_whose_device_id_no_client_could_ask_for_is_malformed(document):
    """Clients may name only ids of the one rule; a record with another id would reach no one."""
    assert reason_for(json.dumps(document).encode()) == "bad device id"


# -- each kind of malformed value ------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b""])
def test_missing_or_empty_value_is_malformed(value):
    assert reason_for(value) == "empty"


def test_value_over_the_limit_is_too_large_and_at_the_limit_is_fine():
    value = b'{"device_id":"a"}'
    assert decode_value(value, max_bytes=len(value)).device_id == "a"
    assert reason_for(value, max_bytes=len(value) - 1) == "too large"


@pytest.mark.parametrize(
    "value",
    [b'{"device_id":"\xff"}', b"\xc3\x28", b'{"device_id":"\xed\xa0\x80"}'],  # last: a surrogate
)
def test_invalid_utf8_is_malformed(value):
    assert reason_for(value) == "not UTF-8"


@pytest.mark.parametrize(
    "value",
    [
        b"{",
        b"not json",
        b'{"device_id":"a"} trailing',
        b"{'device_id':'a'}",
        b'{"device_id":NaN}',
        b'\xef\xbb\xbf{"device_id":"a"}',  # a byte order mark is not JSON text
        b'{"device_id":"a","x":"\\ud800"}',  # lone surrogate escape
    ],
)
def test_invalid_json_is_malformed(value):
    assert reason_for(value) == "not JSON"


@pytest.mark.parametrize("value", [b"[]", b'["device_id"]', b'"a"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_malformed(value):
    assert reason_for(value) == "not a JSON object"


def test_bytearray_and_memoryview_values_are_accepted():
    value = b'{"device_id":"a"}'
    assert decode_value(bytearray(value), max_bytes=LIMIT).text == value.decode()
    assert decode_value(memoryview(value), max_bytes=LIMIT).text == value.decode()


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=300), max_bytes=st.integers(min_value=1, max_value=400))
def test_any_bytes_give_decoded_or_malformed_record(value, max_bytes):
    try:
        decoded = decode_value(value, max_bytes=max_bytes)
    except MalformedRecord as error:
        assert error.reason in REASONS
        return
    assert decoded.text == value.decode("utf-8")
    assert 0 < len(decoded.device_id)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
device_ids = st.from_regex(DEVICE_ID_PATTERN, fullmatch=True) | st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def records(draw) -> tuple[str, str]:
    """JSON text of an object with a device id in one accepted place, and that id as text.

    Generated keys are at most 8 characters, so they never collide with the 9-character
    ``DEVICE_ID``/``device_id`` keys.
    """
    document = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    device_id = draw(device_ids)
    place = draw(st.sampled_from(["DEVICE_ID", "device_id", "top"]))
    if place == "top":
        document["device_id"] = device_id
    else:
        extra = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
        document["data"] = {**extra, place: device_id}
    indent = draw(st.sampled_from([None, 0, 2]))
    ensure_ascii = draw(st.booleans())
    return json.dumps(document, indent=indent, ensure_ascii=ensure_ascii), str(device_id)


@settings(max_examples=300, deadline=None)
@given(record=records())
def test_message_frames_of_decoded_records_round_trip_through_json(record):
    text, device_id = record
    decoded = decode_value(text.encode(), max_bytes=LIMIT)
    assert decoded == Decoded(device_id, text)
    frame = message_frame(decoded.text)
    assert json.loads(frame) == {"event": "message", "data": json.loads(text)}


@settings(max_examples=500, deadline=None)
@given(device_id=st.text(max_size=80) | st.from_regex(DEVICE_ID_PATTERN, fullmatch=True))
def test_a_record_id_is_accepted_exactly_when_a_client_may_subscribe_to_it(device_id):
    """One rule for both sides: decoding and the wire protocol never disagree about an id."""
    value = json.dumps({"device_id": device_id}).encode()
    try:
        decoded = decode_value(value, max_bytes=LIMIT)
    except MalformedRecord as error:
        record_ok = False
        assert error.reason == ("no device id" if device_id == "" else "bad device id")
    else:
        record_ok = True
        assert decoded.device_id == device_id
    try:
        client_ok = parse_device_ids(device_id, max_ids=10) == frozenset({device_id})
    except BadRequest:
        client_ok = False
    assert record_ok == client_ok or device_id == ""
