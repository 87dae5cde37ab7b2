"""Plain HTTP requests to the server under test, with the standard library."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


def http_get(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET `url`; return the status and body, also for 4xx and 5xx answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def http_get_json(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """GET `url` and parse the body as JSON, whatever the status.

    A body that is not JSON fails the test, showing the body.
    """
    status, body = http_get(url, timeout, headers)
    try:
        return status, json.loads(body)
    except ValueError:
        raise AssertionError(f"GET {url} -> {status}, not JSON: {body[:500]!r}") from None
