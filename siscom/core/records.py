"""Decoding a Kafka record value: check it once, find its device id, keep its text unchanged.

A record is decoded exactly once, however many clients receive it. The text is kept as it arrived
so that frames can splice it in byte for byte (see :mod:`siscom.core.protocol`); the parse only proves
that the text is one JSON object and finds the device to route it by.

Anything wrong with a value is reported as :class:`MalformedRecord` with a short, fixed
``reason`` that is safe to count and log; nothing else is raised, so one bad record can never
stop the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from siscom.core.devices import is_device_id
from siscom.core.geo import Position, position_of

__all__ = ["REASONS", "Decoded", "MalformedRecord", "decode_value"]

REASONS = (
    "empty", "too large", "not UTF-8", "not JSON", "not a JSON object", "no device id", "bad device id",
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
