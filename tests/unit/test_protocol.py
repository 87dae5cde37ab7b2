"""The wire contract: device id rules, server frames exactly as documented, client commands."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siscom.core.protocol import (
    PING_FRAME,
    BadRequest,
    ClientCommand,
    CloseCode,
    ack_frame,
    alert_frame,
    error_frame,
    message_frame,
    parse_client_frame,
    parse_device_id_list,
    parse_device_ids,
)

ID_RULE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# -- close codes ---------------------------------------------------------------------------------


def test_close_codes_have_their_rfc_6455_numbers():
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "TRY_AGAIN_LATER": 1013,
    }


# -- device_ids query parameter --------------------------------------------------------------------


def test_absent_parameter_means_every_device():
    assert parse_device_ids(None, max_ids=10) is None


@pytest.mark.parametrize("raw", ["", ",", ",,", " , ,\t"])
def test_parameter_with_no_ids_means_every_device(raw):
    assert parse_device_ids(raw, max_ids=10) is None


def test_ids_are_trimmed_deduplicated_and_empties_dropped():
    raw = " 0848086072 ,0848086073,,0848086072, "
    assert parse_device_ids(raw, max_ids=10) == frozenset({"0848086072", "0848086073"})


def test_every_allowed_character_is_accepted():
    device_id = "AZaz09._:-"
    assert parse_device_ids(device_id, max_ids=1) == frozenset({device_id})


def test_id_of_64_characters_is_accepted_and_65_refused():
    assert parse_device_ids("x" * 64, max_ids=1) == frozenset({"x" * 64})
    with pytest.raises(BadRequest):
        parse_device_ids("x" * 65, max_ids=1)


@pytest.mark.parametrize("bad", ["has space", "a/b", "ñandú", "a;b", "<script>", "a\nb", "x" * 65])
def test_invalid_id_is_refused_naming_it(bad):
    with pytest.raises(BadRequest) as caught:
        parse_device_ids(f"ok1,{bad},ok2", max_ids=10)
    assert repr(bad[:64]) in caught.value.message
    assert caught.value.detail == {"device_id": bad[:64]}


def test_offending_id_is_cut_to_64_characters_in_the_message():
    bad = "é" * 1000
    with pytest.raises(BadRequest) as caught:
        parse_device_ids(bad, max_ids=10)
    assert "é" * 64 in caught.value.message
    assert "é" * 65 not in caught.value.message


def test_at_most_max_ids_distinct_ids_are_accepted():
    assert len(parse_device_ids("a,b,c", max_ids=3)) == 3
    assert parse_device_ids("a,a,a,a", max_ids=1) == frozenset({"a"})  # duplicates count once
    with pytest.raises(BadRequest) as caught:
        parse_device_ids("a,b,c,d", max_ids=3)
    assert "at most 3" in caught.value.message
    assert caught.value.detail == {"max_device_ids": 3}


def test_bad_request_is_a_value_error_whose_text_is_the_message():
    error = BadRequest("nope", field="x")
    assert isinstance(error, ValueError)
    assert str(error) == "nope"
    assert json.loads(error.frame()) == {
        "event": "error",
        "data": {"message": "nope", "field": "x"},
    }


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=200) | st.from_regex(r"[A-Za-z0-9._:, -]{0,200}", fullmatch=True))
def test_any_query_gives_ids_obeying_the_rules_or_bad_request(raw):
    max_ids = 5
    try:
        ids = parse_device_ids(raw, max_ids=max_ids)
    except BadRequest as error:
        assert error.message
        return
    items = {item.strip() for item in raw.split(",")} - {""}
    if ids is None:
        assert not items
    else:
        assert ids == items
        assert 1 <= len(ids) <= max_ids
        assert all(ID_RULE.fullmatch(device_id) for device_id in ids)


# -- device_ids of a client command ---------------------------------------------------------------


def test_id_list_follows_the_query_rules():
    assert parse_device_id_list([" a ", "b", "a", ""], max_ids=5) == frozenset({"a", "b"})


def test_empty_id_list_stays_empty():
    assert parse_device_id_list([], max_ids=5) == frozenset()


@pytest.mark.parametrize("items", ["a,b", None, {"a": 1}, ["a", 1], [["a"]], 7])
def test_id_list_must_be_a_list_of_strings(items):
    with pytest.raises(BadRequest, match="list of strings"):
        parse_device_id_list(items, max_ids=5)


def test_id_list_refuses_bad_ids_and_too_many():
    with pytest.raises(BadRequest, match="'a b'"):
        parse_device_id_list(["a b"], max_ids=5)
    with pytest.raises(BadRequest, match="at most 2"):
        parse_device_id_list(["a", "b", "c"], max_ids=2)


# -- server frames --------------------------------------------------------------------------------


def test_message_frame_splices_the_value_byte_for_byte():
    value = '{"data": {"DEVICE_ID": "0848086072", "SPEED": "0.00"},  "n": 1.50}'
    assert message_frame(value) == '{"event":"message","data":' + value + "}"
    assert json.loads(message_frame(value)) == {"event": "message", "data": json.loads(value)}


def test_alert_frame_splices_the_value_byte_for_byte():
    value = '{"device_id":"a","kind":"panic"}'
    assert alert_frame(value) == '{"event":"alert","data":{"device_id":"a","kind":"panic"}}'


def test_ping_frame_is_the_documented_keep_alive():
    assert PING_FRAME == '{"event":"ping","data":{"type":"keep-alive"}}'
    assert json.loads(PING_FRAME) == {"event": "ping", "data": {"type": "keep-alive"}}


def test_error_frame_is_compact_json_with_message_first():
    assert error_frame("bad device id", device_id="a b") == (
        '{"event":"error","data":{"message":"bad device id","device_id":"a b"}}'
    )


def test_error_frame_escapes_what_it_must():
    frame = error_frame('say "hi"\n', note="ñ")
    assert json.loads(frame) == {"event": "error", "data": {"message": 'say "hi"\n', "note": "ñ"}}


def test_ack_frame_lists_ids_sorted_or_null_for_every_device():
    assert ack_frame("subscribe", frozenset({"b", "a"})) == (
        '{"event":"ack","data":{"action":"subscribe","device_ids":["a","b"]}}'
    )
    assert ack_frame("unsubscribe", None) == ('{"event":"ack","data":{"action":"unsubscribe","device_ids":null}}')


# -- client frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
def test_commands_are_parsed_from_text_and_bytes(action):
    text = json.dumps({"action": action, "device_ids": ["a", " b ", "a"]})
    expected = ClientCommand(action, frozenset({"a", "b"}))
    assert parse_client_frame(text, max_ids=5) == expected
    assert parse_client_frame(text.encode(), max_ids=5) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ping",
        "[]",
        '"subscribe"',
        "{}",
        '{"action":"ping"}',
        '{"action":"SUBSCRIBE","device_ids":["a"]}',
        '{"action":["subscribe"],"device_ids":["a"]}',
        '{"event":"ping","data":{"type":"keep-alive"}}',
        b"\xff\xfe",
    ],
)
def test_anything_but_a_command_is_ignored(text):
    assert parse_client_frame(text, max_ids=5) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"action":"subscribe"}',
        '{"action":"subscribe","device_ids":"a,b"}',
        '{"action":"unsubscribe","device_ids":["a/b"]}',
        '{"action":"subscribe","device_ids":["a","b","c","d","e","f"]}',
    ],
)
def test_command_with_bad_device_ids_is_a_bad_request(text):
    with pytest.raises(BadRequest):
        parse_client_frame(text, max_ids=5)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_any_client_text_gives_a_command_none_or_bad_request(text):
    try:
        command = parse_client_frame(text, max_ids=5)
    except BadRequest:
        return
    assert command is None or command.action in {"subscribe", "unsubscribe"}
