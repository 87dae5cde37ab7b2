"""The demo page: one HTML document, its scripts and stylesheets, and the vendored map library.

The page learns where its map tiles come from through two ``<meta>`` tags filled in here, so it
needs no second request before drawing; its Content-Security-Policy allows images from that one
tile server and nothing else beyond its own origin.
"""

from __future__ import annotations

import html
from pathlib import Path

from quart import Blueprint, Response, abort, send_from_directory

from siscom.config import Settings
from siscom.security.headers import demo_page_policy

__all__ = ["OSM_ATTRIBUTION", "demo_blueprint", "render_page"]

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE = "index.html"

#: OpenStreetMap's licence asks every map drawn from its data to credit it, with a link.
OSM_ATTRIBUTION = '© <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
_TILES_META = '<meta name="siscom-map-tiles" content="">'
_ATTRIBUTION_META = '<meta name="siscom-map-attribution" content="">'


def render_page(template: str, tile_url: str | None) -> str:
    """The page with the tile URL and its attribution filled in (left empty with tiles off)."""
    if _TILES_META not in template or _ATTRIBUTION_META not in template:
        raise ValueError(f"{PAGE} lost its map <meta> tags")
    if tile_url is None:
        return template
    return template.replace(_TILES_META, f'<meta name="siscom-map-tiles" content="{html.escape(tile_url)}">').replace(
        _ATTRIBUTION_META,
        f'<meta name="siscom-map-attribution" content="{html.escape(OSM_ATTRIBUTION)}">',
    )


def demo_blueprint(settings: Settings) -> Blueprint:
    blueprint = Blueprint("demo", __name__)
    tile_url = settings.stream_map_tile_url
    page = render_page((STATIC / PAGE).read_text(encoding="utf-8"), tile_url)
    policy = demo_page_policy(tile_url)

    @blueprint.get("/")
    async def demo_page() -> Response:
        return Response(page, 200, {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": policy})

    @blueprint.get("/static/<path:name>")
    async def static_file(name: str) -> Response:
        if name == PAGE:  # only served filled in, at /
            abort(404)
        return await send_from_directory(STATIC, name)

    return blueprint
