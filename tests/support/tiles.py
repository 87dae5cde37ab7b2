"""A raster tile server on loopback for the demo page's map: generated PNG tiles, every request kept.

Each tile is drawn from its own coordinates (a pale land colour, a few "streets" and a frame), so
a screenshot shows where tiles join and a wrong tile would look different. Nothing is fetched from
outside the machine.
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["TileServer", "png", "serve_tiles", "tile_image"]

TILE = 256
_TILE_PATH = re.compile(r"/tiles/(\d+)/(\d+)/(\d+)\.png")


def png(width: int, height: int, pixel) -> bytes:
    """An RGB PNG whose pixel (x, y) has the colour ``pixel(x, y)``."""
    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def tile_image(z: int, x: int, y: int) -> bytes:
    """A made-up map tile: land, streets every 64 pixels shifted by the tile's coordinates, a frame."""
    land = (242, 239, 233) if (x + y) % 2 else (236, 233, 226)
    street, frame = (255, 255, 255), (214, 208, 196)
    shift = (x * 17 + y * 29 + z) % 64

    def pixel(px: int, py: int) -> tuple[int, int, int]:
        if px == 0 or py == 0:
            return frame
        if (px + shift) % 64 < 4 or (py + shift) % 64 < 4:
            return street
        return land

    return png(TILE, TILE, pixel)


@dataclass
class TileServer:
    """Where the tiles are served from, and every path asked for, in order."""

    host: str
    port: int
    requests: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url_template(self) -> str:
        return f"{self.origin}/tiles/{{z}}/{{x}}/{{y}}.png"

    def tiles_requested(self) -> list[tuple[int, int, int]]:
        """(z, x, y) of each tile request, in order; other paths are left out."""
        found = (_TILE_PATH.fullmatch(path) for path in self.requests)
        return [(int(m[1]), int(m[2]), int(m[3])) for m in found if m]


@contextmanager
def serve_tiles(host: str = "127.0.0.1") -> Iterator[TileServer]:
    """Serve tiles on a free port of `host` until the block ends."""
    cache: dict[tuple[int, int, int], bytes] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            with lock:
                tiles.requests.append(self.path)
            match = _TILE_PATH.fullmatch(self.path)
            if match is None:
                self.send_error(404)
                return
            key = (int(match[1]), int(match[2]), int(match[3]))
            with lock:
                if key not in cache:
                    cache[key] = tile_image(*key)
                body = cache[key]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            pass

    httpd = ThreadingHTTPServer((host, 0), Handler)
    httpd.daemon_threads = True
    tiles = TileServer(host, httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, name="tile-server", daemon=True)
    thread.start()
    try:
        yield tiles
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
