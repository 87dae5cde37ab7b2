"""Which web pages may open a stream: the ``Origin`` check against cross-site WebSocket hijacking.

Browsers attach cookies and client certificates to a WebSocket handshake whatever page opened it,
and the same-origin policy does not apply to WebSockets; the server's only defence is to look at
the ``Origin`` header the browser sets and cannot be told to fake. Clients that are not browsers
send no ``Origin`` (or anything they like), so this check protects browser users, nothing more:
authentication is what keeps other programs out.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["ANY_ORIGIN", "OriginPolicy", "normalize_origin"]

#: The list item that allows every origin.
ANY_ORIGIN = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str:
    """``scheme://host[:port]`` in lower case, without the scheme's default port.

    Raises :class:`ValueError` for anything that is not a bare http(s) origin (a path, a query,
    credentials or another scheme).
    """
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an http(s) origin")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("an origin has no path, query or credentials")
    port = parts.port  # raises ValueError for a port out of range
    host = parts.hostname
    if ":" in host:  # IPv6 literal: keep the brackets, as browsers send it
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """Allows the listed origins (or every origin, given ``*``) and handshakes without one."""

    def __init__(self, allowed: Iterable[str]) -> None:
        items = tuple(allowed)
        self.any = ANY_ORIGIN in items
        self._allowed = frozenset(normalize_origin(item) for item in items if item != ANY_ORIGIN)

    def allows(self, origin: str | None) -> bool:
        """Whether a handshake whose ``Origin`` header is ``origin`` may proceed.

        No header at all means no browser is involved, and is allowed: such a client could as
        well send an allowed origin.
        """
        if self.any or origin is None:
            return True
        try:
            return normalize_origin(origin) in self._allowed
        except ValueError:  # "null" (sandboxed pages, file://) and garbage
            return False
