"""Boxes and positions on the map, in WGS84 degrees: what a viewport is and where a record is.

A box is GeoJSON's ``[min_lon, min_lat, max_lon, max_lat]``; one with ``min_lon > max_lon``
crosses the antimeridian (it holds the longitudes from ``min_lon`` east to 180 and from -180 to
``max_lon``). Edges belong to the box. A record's position is ``data.LATITUD`` / ``data.LONGITUD``
(strings such as ``"+20.652472"``, or numbers), else ``data.lat`` / ``data.lon``, else a
top-level ``lat`` / ``lon``: the first pair that holds a valid position (both present, finite,
latitude within -90..90, longitude within -180..180).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BBox", "Position", "parse_bbox", "position_of"]

#: (latitude, longitude) in degrees.
Position = tuple[float, float]

#: A coordinate as text: optional sign, digits, optional fraction and exponent (as JavaScript
#: writes small numbers); never words such as "nan" or "inf" that float() would take.
#: ASCII only (re.ASCII): float() also takes other scripts' digits and spaces ("١٢", "\u3000").
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?\s*", re.ASCII)
_MAX_NUMBER_CHARS = 40


class BadBox(ValueError):
    """A box that is not one; the message is written for the client."""


@dataclass(frozen=True, slots=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    @property
    def crosses_antimeridian(self) -> bool:
        return self.min_lon > self.max_lon

    def contains(self, lat: float, lon: float) -> bool:
        if not self.min_lat <= lat <= self.max_lat:
            return False
        if self.min_lon <= self.max_lon:
            return self.min_lon <= lon <= self.max_lon
        return lon >= self.min_lon or lon <= self.max_lon

    def parts(self) -> tuple[BBox, ...]:
        """The box as boxes that do not cross the antimeridian (one, or two)."""
        if not self.crosses_antimeridian:
            return (self,)
        return (
            BBox(self.min_lon, self.min_lat, 180.0, self.max_lat),
            BBox(-180.0, self.min_lat, self.max_lon, self.max_lat),
        )

    @property
    def width(self) -> float:
        """Degrees of longitude covered."""
        if self.crosses_antimeridian:
            return 360.0 - self.min_lon + self.max_lon
        return self.max_lon - self.min_lon

    def as_list(self) -> list[float]:
        return [self.min_lon, self.min_lat, self.max_lon, self.max_lat]


def _coordinate(value: object) -> float | None:
    """A finite number from a JSON number or a plain decimal string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and len(value) <= _MAX_NUMBER_CHARS and _NUMBER.fullmatch(value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _valid(lat: float | None, lon: float | None) -> Position | None:
    if lat is None or lon is None or not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        return None
    return lat, lon


def parse_bbox(value: str | Sequence[Any]) -> BBox:
    """A box from the query's ``"min_lon,min_lat,max_lon,max_lat"`` or a JSON list of 4 numbers.

    Raises :class:`BadBox` for anything else, for coordinates out of range, and for
    ``min_lat > max_lat``.
    """
    if isinstance(value, str):
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise BadBox("bbox must be min_lon,min_lat,max_lon,max_lat")
    if len(items) != 4:
        raise BadBox("bbox must be 4 numbers: min_lon,min_lat,max_lon,max_lat")
    numbers = [number for number in map(_coordinate, items) if number is not None]
    if len(numbers) != 4:
        raise BadBox("bbox must be 4 numbers: min_lon,min_lat,max_lon,max_lat")
    min_lon, min_lat, max_lon, max_lat = numbers
    if not (-180.0 <= min_lon <= 180.0 and -180.0 <= max_lon <= 180.0):
        raise BadBox("bbox longitudes must be within -180..180")
    if not (-90.0 <= min_lat <= 90.0 and -90.0 <= max_lat <= 90.0):
        raise BadBox("bbox latitudes must be within -90..90")
    if min_lat > max_lat:
        raise BadBox("bbox min_lat must not exceed max_lat")
    return BBox(min_lon, min_lat, max_lon, max_lat)


def position_of(document: dict[str, Any]) -> Position | None:
    """Where a record says its device is: the first of its coordinate pairs (see the module's
    rule) that holds a valid position, or None."""
    data = document.get("data")
    if isinstance(data, dict):
        if "LATITUD" in data:
            position = _valid(_coordinate(data["LATITUD"]), _coordinate(data.get("LONGITUD")))
            if position is not None:
                return position
        if "lat" in data:
            position = _valid(_coordinate(data["lat"]), _coordinate(data.get("lon")))
            if position is not None:
                return position
    if "lat" in document:
        return _valid(_coordinate(document["lat"]), _coordinate(document.get("lon")))
    return None
