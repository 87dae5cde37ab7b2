"""The demo page is told its tile server in the HTML, and its policy names that server alone."""

from __future__ import annotations

import hashlib
import re

import pytest

from siscom.security.headers import SECURITY_HEADERS, demo_page_policy, tile_origin
from siscom.web.demo import OSM_ATTRIBUTION, STATIC, render_page

PAGE = (STATIC / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
        ("http://127.0.0.1:8080/tiles/{z}/{x}/{y}.png", "http://127.0.0.1:8080"),
        ("https://Tiles.Example.com:443/a?x={x}&y={y}&z={z}", "https://tiles.example.com:443"),
    ],
)
def test_the_tile_origin_is_the_scheme_host_and_port_of_the_template(url, origin):
    assert tile_origin(url) == origin


def test_the_demo_policy_adds_the_tile_origin_to_img_src_and_nothing_else():
    default = SECURITY_HEADERS["Content-Security-Policy"]
    policy = demo_page_policy("https://tiles.example.com/{z}/{x}/{y}.png")
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["img-src"] == "'self' data: https://tiles.example.com"
    assert policy.replace(" https://tiles.example.com", "") == default
    assert demo_page_policy(None) == default


def test_the_page_carries_the_tile_url_and_the_openstreetmap_credit_escaped_for_html():
    page = render_page(PAGE, "https://tiles.example.com/{z}/{x}/{y}.png?a=1&b=2")
    assert '<meta name="siscom-map-tiles" content="https://tiles.example.com/{z}/{x}/{y}.png?a=1&amp;b=2">' in page
    assert "href=&quot;https://www.openstreetmap.org/copyright&quot;" in page
    assert "OpenStreetMap</a> contributors" in OSM_ATTRIBUTION


def test_with_tiles_off_the_page_is_served_as_written_with_empty_tile_tags():
    assert render_page(PAGE, None) == PAGE
    assert '<meta name="siscom-map-tiles" content="">' in PAGE


def test_the_vendored_map_libraries_are_the_pinned_releases_with_their_licences():
    """Guards against a hand edit of third-party code: the files must match vendor/README.md."""
    vendor = STATIC / "vendor"
    sums = re.findall(r"^([0-9a-f]{64})  (\S+)$", (vendor / "README.md").read_text(), re.MULTILINE)
    assert len(sums) == 5
    for digest, name in sums:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    shipped = {str(p.relative_to(vendor)) for p in vendor.rglob("*.js")} | {
        str(p.relative_to(vendor)) for p in vendor.rglob("*.css")
    }
    assert shipped == {name for _, name in sums}
    assert "BSD 2-Clause License" in (vendor / "leaflet" / "LICENSE").read_text()
    assert "Permission is hereby granted" in (vendor / "leaflet.markercluster" / "LICENSE").read_text()
