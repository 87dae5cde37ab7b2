"""The map options of a stream: ``bbox``, ``max_hz`` and ``fields`` from the query, checked.

Each is optional and they combine with each other and with ``device_ids`` and tokens. A bad value
is a :class:`~siscom.core.protocol.BadRequest` naming the parameter and what is allowed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from siscom.core.fields import parse_fields
from siscom.core.geo import BadBox, BBox, parse_bbox
from siscom.core.protocol import BadRequest

__all__ = ["MapOptions", "parse_map_options"]

_HZ = re.compile(r"(?:[0-9]{1,6}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})")


@dataclass(frozen=True, slots=True)
class MapOptions:
    bbox: BBox | None = None
    max_hz: float | None = None
    fields: tuple[str, ...] | None = None

    @property
    def any(self) -> bool:
        return self.bbox is not None or self.max_hz is not None or self.fields is not None


def parse_max_hz(raw: str, *, highest: float) -> float:
    text = raw.strip()
    if not _HZ.fullmatch(text):
        raise BadRequest(f"max_hz must be a number greater than 0 and at most {highest:g}", max_hz_limit=highest)
    value = float(text)
    if not (math.isfinite(value) and 0 < value <= highest):
        raise BadRequest(f"max_hz must be a number greater than 0 and at most {highest:g}", max_hz_limit=highest)
    return value


def parse_map_options(
    bbox: str | None, max_hz: str | None, fields: str | None, *, max_fields: int, highest_hz: float
) -> MapOptions:
    """The options from the raw query values (None: the parameter is absent)."""
    box: BBox | None = None
    if bbox is not None:
        try:
            box = parse_bbox(bbox)
        except BadBox as error:
            raise BadRequest(str(error)) from None
    hz = None if max_hz is None else parse_max_hz(max_hz, highest=highest_hz)
    names = None if fields is None else parse_fields(fields, max_fields=max_fields)
    return MapOptions(box, hz, names)
