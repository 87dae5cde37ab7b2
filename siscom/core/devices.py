"""What a device id is, for records and clients alike.

A record is routed by its device id and a client subscribes by naming ids, so both sides must
agree on one rule: an id a record may carry is an id a client may ask for. The rule is 1-64
characters of ``A-Z a-z 0-9 . _ : -``, safe in a URL query, a log line and a JSON string without
any escaping.
"""

from __future__ import annotations

import re

__all__ = ["DEVICE_ID_PATTERN", "DEVICE_ID_RULE", "MAX_DEVICE_ID_CHARS", "is_device_id"]

MAX_DEVICE_ID_CHARS = 64
DEVICE_ID_PATTERN = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_DEVICE_ID_CHARS}}}")
#: The rule in words, for error messages and documentation.
DEVICE_ID_RULE = f"1-{MAX_DEVICE_ID_CHARS} characters of A-Z a-z 0-9 . _ : -"


def is_device_id(text: str) -> bool:
    """True when ``text`` is a device id as a whole, with nothing around it."""
    return DEVICE_ID_PATTERN.fullmatch(text) is not None
