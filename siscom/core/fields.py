"""Field selection: position frames reduced to the fields a client asked for, built once per field
set per record.

A client with ``fields=LATITUD,LONGITUD`` receives ``{"event":"message","data":{"data":{...}}}``
holding those fields of the record's ``data`` that exist, always with its device id. Every client
with the same field set shares one :class:`Projection` (from :class:`Projections`), which keeps
the last frame it reduced: the router hands the same frame object to every recipient in turn, so
the reduced text is built once per record and field set, however many clients share it.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

import orjson

from siscom.core.protocol import BadRequest

__all__ = ["FIELD_RULE", "Projection", "Projections", "parse_fields"]

_FIELD = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FIELD_RULE = "1-64 characters of A-Z a-z 0-9 _ . -"


def parse_fields(raw: str, *, max_fields: int) -> tuple[str, ...]:
    """The ``fields`` query parameter: comma-separated names, trimmed, empties and duplicates
    dropped, in a canonical (sorted) order. Raises :class:`BadRequest`."""
    names: set[str] = set()
    for item in raw.split(","):
        name = item.strip()
        if not name:
            continue
        if not _FIELD.fullmatch(name):
            raise BadRequest(f"invalid field name {name[:64]!r}: expected {FIELD_RULE}")
        names.add(name)
        if len(names) > max_fields:
            raise BadRequest(f"too many fields: at most {max_fields} allowed", max_fields=max_fields)
    if not names:
        raise BadRequest("fields must name at least one field")
    return tuple(sorted(names))


class Projection:
    """One field set, and the last frame it reduced (compared by identity)."""

    __slots__ = ("fields", "_last_in", "_last_out", "builds", "__weakref__")

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self._last_in: str | None = None
        self._last_out = ""
        #: Reduced texts built so far (what sharing saves is visible in tests).
        self.builds = 0

    def reduce(self, device_id: str, frame: str) -> str:
        """The reduced text of a ``message`` frame (the same object as last time for the same frame)."""
        if frame is self._last_in:
            return self._last_out
        out = self._build(device_id, frame)
        self._last_in, self._last_out = frame, out
        self.builds += 1
        return out

    def _build(self, device_id: str, frame: str) -> str:
        document: Any = orjson.loads(frame)["data"]
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            data = {}
        reduced = {name: data[name] for name in self.fields if name in data}
        if "DEVICE_ID" in data:
            reduced["DEVICE_ID"] = data["DEVICE_ID"]
        elif "device_id" in data:
            reduced["device_id"] = data["device_id"]
        else:
            reduced["device_id"] = device_id
        return '{"event":"message","data":' + orjson.dumps({"data": reduced}).decode() + "}"


class Projections:
    """The shared :class:`Projection` of each field set in use (forgotten when no client uses it)."""

    def __init__(self) -> None:
        self._by_fields: weakref.WeakValueDictionary[tuple[str, ...], Projection] = weakref.WeakValueDictionary()

    def get(self, fields: tuple[str, ...]) -> Projection:
        projection = self._by_fields.get(fields)
        if projection is None:
            projection = self._by_fields[fields] = Projection(fields)
        return projection
