"""Response headers a security review expects on every HTTP answer.

The service serves JSON status documents and one static demo page, none of which should be
sniffed as another type, framed by another site, or leak the URL they were opened from (a
``?token=`` query included). The server's name and version are left out at the Hypercorn level
(``include_server_header``, set by ``siscom serve``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import MutableMapping

__all__ = ["SECURITY_HEADERS", "add_security_headers", "demo_page_policy", "tile_origin"]


def _content_security_policy(*image_origins: str) -> str:
    # The demo page loads only its own scripts and stylesheets, opens one WebSocket and, on a
    # real map, shows tiles from one server. ``data:`` stays in img-src because Leaflet cancels a
    # tile download by pointing the image at an empty ``data:`` GIF (leaflet 1.9.4
    # ``Util.emptyImageUrl``).
    images = " ".join(("'self'", "data:", *image_origins))
    return (
        f"default-src 'self'; connect-src 'self' ws: wss:; img-src {images}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": _content_security_policy(),
}


def tile_origin(tile_url: str) -> str:
    """``scheme://host[:port]`` of a tile URL template, as a policy source expression."""
    parts = urllib.parse.urlsplit(tile_url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def demo_page_policy(tile_url: str | None) -> str:
    """The demo page's Content-Security-Policy: the default one, plus the tile server's origin.

    Exactly one origin is added, and only to ``img-src``; with tiles off (``None``) the page
    gets the default policy.
    """
    if tile_url is None:
        return SECURITY_HEADERS["Content-Security-Policy"]
    return _content_security_policy(tile_origin(tile_url))


def add_security_headers(headers: MutableMapping[str, str]) -> None:
    """Set the headers above, leaving alone any a route chose itself."""
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
