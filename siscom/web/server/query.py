"""A request's query parameters, read without leaving them on the request.

Werkzeug 3.1's ``args`` is a ``cached_property`` that stores the parsed parameters in the
object's ``__dict__``, which then grows (about 1.5 KB for Quart's websocket) and keeps them for
as long as the connection lasts, for a handshake's use.
``tests/contracts/test_dependency_contracts.py`` fails when that property changes.
"""

from __future__ import annotations

import inspect
from typing import Any

from werkzeug.datastructures import MultiDict
from werkzeug.local import LocalProxy
from werkzeug.sansio.request import Request as SansIORequest

__all__ = ["query_args"]


def query_args(request: SansIORequest | LocalProxy[Any]) -> MultiDict[str, str]:
    """The query's parameters, parsed as ``request.args`` parses them, without caching them on
    the request (or websocket)."""
    # Quart's request and websocket globals are proxies of the current one.
    target = request._get_current_object() if isinstance(request, LocalProxy) else request
    # The class's cached_property itself, whose function parses without storing the result.
    args: MultiDict[str, str] = inspect.getattr_static(type(target), "args").fget(target)
    return args
