"""Plain HTTP GETs with the standard library, for readiness checks, tests and benchmarks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

__all__ = ["NotJSON", "http_get", "http_get_json", "http_status"]


class NotJSON(ValueError):
    """A body that should have been JSON was not."""


def http_get(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET `url`; return the status and body, also for 4xx and 5xx answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def http_get_json(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """GET `url` and parse the body as JSON, whatever the status.

    A body that is not JSON raises :class:`NotJSON`, showing the start of the body.
    """
    status, body = http_get(url, timeout, headers)
    try:
        return status, json.loads(body)
    except ValueError:
        raise NotJSON(f"GET {url} -> {status}, not JSON: {body[:500]!r}") from None


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET url``, or None when nothing answered (a readiness check)."""
    try:
        return http_get(url, timeout)[0]
    except OSError:
        return None
