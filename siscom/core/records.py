"""Decoding a Kafka record value: check it once, find its device id, keep its text unchanged.

A record is decoded exactly once, however many clients receive it. The text is kept as it arrived
so that frames can splice it in byte for byte (see :mod:`siscom.core.protocol`); the parse only proves
that the text is one JSON object and finds the device to route it by.

Anything wrong with a value is reported as :class:`MalformedRecord` with a short, fixed
``reason`` that is safe to count and log; nothing else is raised, so one bad record can never
stop the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from siscom.core.devices import is_device_id
from siscom.core.geo import Position, position_of

__all__ = ["REASONS", "Decoded", "MalformedRecord", "decode_value", "device_id_hint", "device_id_of"]

REASONS = (
    "empty",
    "too large",
    "not UTF-8",
    "not JSON",
    "not a JSON object",
    "no device id",
    "bad device id",
)


class MalformedRecord(ValueError):
    """A record value that cannot be streamed; ``reason`` is one of :data:`REASONS`."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record value proven to be a JSON object, with the device it belongs to."""

    device_id: str
    text: str  # the value decoded as UTF-8, unchanged
    #: Where the record says its device is, if it says so validly (see :mod:`siscom.core.geo`).
    position: Position | None = None


def decode_value(value: bytes | None, *, max_bytes: int) -> Decoded:
    """Check a record value and find its device id.

    The device id is the first of ``data.DEVICE_ID``, ``data.device_id`` and a top-level
    ``device_id`` that holds a non-empty string or an integer (written in decimal); absent, null,
    empty and other values are passed over. That id must follow the one rule of
    :mod:`siscom.core.devices` (no client could ever subscribe to another), else the record is
    malformed with reason "bad device id". Raises :class:`MalformedRecord`, and nothing else, when
    the value is empty, longer than ``max_bytes``, not UTF-8, not JSON, not a JSON object, or has
    no id or a bad one.
    """
    if not value:
        raise MalformedRecord("empty")
    if len(value) > max_bytes:
        raise MalformedRecord("too large")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord("not UTF-8") from None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise MalformedRecord("not JSON") from None
    if not isinstance(document, dict):
        raise MalformedRecord("not a JSON object")
    device_id = _device_id(document)
    if device_id is None:
        raise MalformedRecord("no device id")
    if not is_device_id(device_id):
        raise MalformedRecord("bad device id")
    return Decoded(device_id, text, position_of(document))


#: The common layout: an object whose first member is ``data``, whose first member is ``DEVICE_ID``
#: holding a string that is a device id (so it needs no unescaping).
_USUAL_LAYOUT = re.compile(rb'\{\s*"data"\s*:\s*\{\s*"DEVICE_ID"\s*:\s*"([A-Za-z0-9._:-]{1,64})"')


def device_id_hint(value: bytes) -> str | None:
    """The device id of a record in the usual layout, found without parsing it; None otherwise.

    Only a hint: the rest of the value is not checked (it may not be JSON at all, or name
    ``DEVICE_ID`` again further on). Whoever relies on it decodes the record properly before
    sending it anywhere (warm-up does, for the few records it keeps).
    """
    found = _USUAL_LAYOUT.match(value)
    return None if found is None else found.group(1).decode("ascii")


def device_id_of(value: bytes | None, *, max_bytes: int) -> str | None:
    """The device id :func:`decode_value` would find, or None where it would raise.

    For reading much of the log at once (warm-up): the same checks, without keeping the text or
    finding the position, and without raising, which costs more than the parse of a short record.
    """
    if not value or len(value) > max_bytes:
        return None
    try:
        document = orjson.loads(value)  # refuses what is not UTF-8, as decode_value does
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    device_id = _device_id(document)
    if device_id is None or not is_device_id(device_id):
        return None
    return device_id


def _device_id(document: dict[str, Any]) -> str | None:
    data = document.get("data")
    candidates = []
    if isinstance(data, dict):
        candidates += [data.get("DEVICE_ID"), data.get("device_id")]
    candidates.append(document.get("device_id"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return str(candidate)
    return None
