"""Response headers a security review expects on every HTTP answer.

The service serves JSON status documents and one static demo page, none of which should be
sniffed as another type, framed by another site, or leak the URL they were opened from (a
``?token=`` query included). The server's name and version are left out at the Hypercorn level
(``include_server_header``, set by ``siscom serve``).
"""

from __future__ import annotations

from collections.abc import MutableMapping

__all__ = ["SECURITY_HEADERS", "add_security_headers"]

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The demo page loads only its own script and stylesheet and opens one WebSocket.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


def add_security_headers(headers: MutableMapping[str, str]) -> None:
    """Set the headers above, leaving alone any a route chose itself."""
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
