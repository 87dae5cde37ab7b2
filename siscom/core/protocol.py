"""The WebSocket wire contract of ``/api/v1/stream``: what clients may send, what they receive.

Pure functions and constants, no I/O, so the contract can be read and tested in one place.
Server frames are compact JSON text (browsers ``JSON.parse`` them), one object per frame::

    {"event":"message","id":<cursor>,"data":<Kafka value>}      a position record
    {"event":"alert","id":<cursor>,"data":<Kafka value>}        a record of the alerts topic
    {"event":"ping","id":<cursor>,"data":{"type":"keep-alive"}} keep-alive
    {"event":"resumed","data":{"recovered":...,"reason":...}}   first frame of a resumed stream
    {"event":"error","data":{"message":...}}      a refused request (then, usually, close 1008)
    {"event":"ack","data":{"action":...,"device_ids":[...]|null}}  answer to a client command
    {"event":"token-expiring","data":{"expires_in":S}}  the token ends in S seconds: send a new one
    {"event":"leave","data":{"device_id":...}}   a device left the client's box

The Kafka value is spliced into message and alert frames byte for byte, never re-encoded: it was
checked to be a JSON object when it was decoded (see :mod:`siscom.core.records`), so the frame is valid
JSON and costs one string concatenation per record.

Clients may send ``{"action":"subscribe"|"unsubscribe","device_ids":[...]}`` to change their
device set without reconnecting, ``{"action":"subscribe","bbox":[...]}`` to move their box, and
``{"action":"refresh","token":"..."}`` to extend their stream with a new token (answered
``{"event":"ack","data":{"action":"refresh","expires_at":<exp>}}`` or an error frame); any other
text is ignored.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from siscom.core.devices import DEVICE_ID_PATTERN, DEVICE_ID_RULE, is_device_id
from siscom.core.geo import BadBox, BBox, parse_bbox

__all__ = [
    "PING_FRAME",
    "BadRequest",
    "ClientCommand",
    "CloseCode",
    "RefreshCommand",
    "DEVICE_ID_PATTERN",  # re-exported from siscom.core.devices
    "ack_frame",
    "alert_frame",
    "error_frame",
    "leave_frame",
    "message_frame",
    "parse_client_frame",
    "parse_device_id_list",
    "parse_device_ids",
    "ping_frame",
    "frame_cursor",
    "refreshed_frame",
    "resumed_frame",
    "token_expiring_frame",
    "with_cursor",
]


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY_VIOLATION = 1008  # bad request, not allowed
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # client too slow or server overloaded


class BadRequest(ValueError):
    """A client asked for something the contract does not allow.

    ``message`` is written for the client and goes into an error frame unchanged; ``detail``
    holds extra machine-readable fields for that frame.
    """

    message: str
    detail: dict[str, Any]

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def frame(self) -> str:
        """The error frame telling the client what was wrong."""
        return error_frame(self.message, **self.detail)


# -- device ids --------------------------------------------------------------------------------

_SHOWN_ID_CHARS = 64


def _collect_ids(items: Iterable[str], max_ids: int) -> frozenset[str]:
    """Trim, drop empties, dedupe and check ids; stop at the first bad one or once too many.

    Ids are interned: the many clients that watch the same vehicles then hold one string per
    vehicle between them, not one each (interned strings are freed once nobody holds them).
    """
    ids: set[str] = set()
    for item in items:
        device_id = item.strip()
        if not device_id:
            continue
        if not is_device_id(device_id):
            shown = device_id[:_SHOWN_ID_CHARS]
            raise BadRequest(f"invalid device id {shown!r}: expected {DEVICE_ID_RULE}", device_id=shown)
        ids.add(sys.intern(device_id))
        if len(ids) > max_ids:
            raise BadRequest(f"too many device ids: at most {max_ids} allowed", max_device_ids=max_ids)
    return frozenset(ids)


def parse_device_ids(raw: str | None, *, max_ids: int) -> frozenset[str] | None:
    """The ``device_ids`` query parameter as a set, or ``None`` for "every device".

    ``None`` (no parameter) means every device. Items are split on commas, trimmed, empties
    dropped and duplicates removed; when nothing is left (``device_ids=`` or ``,,``) that also
    means every device, because a client that names no device has not restricted anything.
    Raises :class:`BadRequest` for an id that breaks :mod:`siscom.core.devices`' rule or for more than
    ``max_ids`` distinct ids.
    """
    if raw is None:
        return None
    ids = _collect_ids(raw.split(","), max_ids)
    return ids or None


def parse_device_id_list(items: object, *, max_ids: int) -> frozenset[str]:
    """The ``device_ids`` of a client command: a JSON list of strings, same rules as the query.

    Unlike the query, an empty result stays empty: subscribing to nothing adds nothing.
    """
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise BadRequest("device_ids must be a list of strings")
    return _collect_ids(items, max_ids)


# -- server frames -------------------------------------------------------------------------------

PING_FRAME = '{"event":"ping","data":{"type":"keep-alive"}}'


def message_frame(value_text: str, cursor: str | None = None) -> str:
    """A position record, its Kafka value spliced in unchanged, with its cursor as ``id``."""
    if cursor is None:
        return '{"event":"message","data":' + value_text + "}"
    return '{"event":"message","id":"' + cursor + '","data":' + value_text + "}"


def alert_frame(value_text: str, cursor: str | None = None) -> str:
    """An alerts-topic record, its Kafka value spliced in unchanged, with its cursor as ``id``."""
    if cursor is None:
        return '{"event":"alert","data":' + value_text + "}"
    return '{"event":"alert","id":"' + cursor + '","data":' + value_text + "}"


def ping_frame(cursor: str | None) -> str:
    """A keep-alive carrying the client's current cursor (none before the first record)."""
    if cursor is None:
        return PING_FRAME
    return '{"event":"ping","id":"' + cursor + '","data":{"type":"keep-alive"}}'


_ID_MARK = '"id":"'


def frame_cursor(text: str) -> str | None:
    """The cursor (``id``) of a frame built by this module, or None when it has none.

    Cursors are URL-safe base64, so the first quote after the mark ends them.
    """
    start = text.find(_ID_MARK, 0, 40)
    if start < 0:
        return None
    start += len(_ID_MARK)
    return text[start : text.index('"', start)]


def with_cursor(text: str, cursor: str) -> str:
    """A message or alert frame with another cursor (for a snapshot or a replay)."""
    data = text.index(',"data":')
    head = text[:data]
    mark = head.find(_ID_MARK)
    if mark >= 0:
        head = head[: mark - 1]
    return head + ',"id":"' + cursor + '"' + text[data:]


def without_cursor(text: str) -> str:
    """A message or alert frame without its cursor (``id``); the frame itself when it has none."""
    data = text.find(',"data":')
    mark = text.find(_ID_MARK, 0, data)
    if data < 0 or mark < 0:
        return text
    return text[: mark - 1] + text[data:]


def resumed_frame(recovered: bool, reason: str | None = None) -> str:
    """First frame of a resumed stream: whether everything missed follows."""
    data: dict[str, Any] = {"recovered": recovered}
    if reason is not None:
        data["reason"] = reason
    return _json({"event": "resumed", "data": data})


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def error_frame(message: str, **detail: Any) -> str:
    """``{"event":"error","data":{"message":...,**detail}}``."""
    return _json({"event": "error", "data": {"message": message, **detail}})


def ack_frame(action: str, device_ids: frozenset[str] | None, bbox: BBox | None = None) -> str:
    """Confirms a client command; ``device_ids`` sorted, or ``null`` for every device; the box, if
    the stream has one."""
    ids = None if device_ids is None else sorted(device_ids)
    data: dict[str, Any] = {"action": action, "device_ids": ids}
    if bbox is not None:
        data["bbox"] = bbox.as_list()
    return _json({"event": "ack", "data": data})


def leave_frame(device_id: str) -> str:
    """A device left the client's box (ids need no JSON escaping: see siscom.core.devices)."""
    return '{"event":"leave","data":{"device_id":"' + device_id + '"}}'


def token_expiring_frame(expires_in: float) -> str:
    """Tells the client its token ends in ``expires_in`` seconds (whole seconds, rounded down)."""
    seconds = max(0, int(expires_in))
    return '{"event":"token-expiring","data":{"expires_in":' + str(seconds) + "}}"


def refreshed_frame(expires_at: float) -> str:
    """Confirms a token refresh: the stream now lasts until ``expires_at`` (the new token's ``exp``)."""
    return _json({"event": "ack", "data": {"action": "refresh", "expires_at": int(expires_at)}})


# -- client frames -------------------------------------------------------------------------------

Action = Literal["subscribe", "unsubscribe"]
_ACTIONS: frozenset[str] = frozenset({"subscribe", "unsubscribe"})
_REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A client's request to add devices to, or remove them from, its subscription, or to move
    its box (``bbox``; then ``device_ids`` may be empty)."""

    action: Action
    device_ids: frozenset[str]
    bbox: BBox | None = None


@dataclass(frozen=True, slots=True, repr=False)
class RefreshCommand:
    """A client's new token, to extend its stream (never shown in a repr: it is a credential)."""

    token: str

    def __repr__(self) -> str:
        return "RefreshCommand(token=***)"


def parse_client_frame(text: str | bytes, *, max_ids: int) -> ClientCommand | RefreshCommand | None:
    """The command in a client frame, or ``None`` when the frame is not a command.

    Anything that is not a JSON object with ``"action"`` set to ``"subscribe"``, ``"unsubscribe"``
    or ``"refresh"`` is ignored (``None``), so clients may send their own heartbeats. A command
    whose ``device_ids`` break the rules, or a refresh without a token, raises :class:`BadRequest`.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, dict):
        return None
    action = frame.get("action")
    if action == _REFRESH:
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest("token refresh refused: token must be a non-empty string")
        return RefreshCommand(token)
    if not isinstance(action, str) or action not in _ACTIONS:
        return None
    command = cast(Action, action)  # one of _ACTIONS, checked above
    bbox = None
    if command == "subscribe" and "bbox" in frame:
        try:
            bbox = parse_bbox(frame["bbox"])
        except BadBox as error:
            raise BadRequest(str(error)) from None
        if "device_ids" not in frame:
            return ClientCommand(command, frozenset(), bbox)
    ids = parse_device_id_list(frame.get("device_ids"), max_ids=max_ids)
    return ClientCommand(command, ids, bbox)
