"""The index of the clients that watch a box: routing a record costs a few lookups, not one check
per box.

Boxes live in a hierarchy of grids (cells of 0.001 degrees, then twice as large at each level, up
to cells larger than the world). A box is filed at the finest level whose cells are at least half
as large as a quarter of the box, so it lies in at most 5 x 5 cells there (twice that across the
antimeridian). A position is looked up in one cell per level that holds any box; only the boxes
filed in that cell are checked exactly, so the candidates per record are the boxes near the
record (about 1.5 to 3 times the boxes that contain it, for boxes of one size), however many
clients there are. A box that covers a cell (the part of it inside the world) is filed there as
covering it: a position in that cell is in the box without a check, so a box larger than its cells
(up to the whole world) costs a lookup what a subscription to every device costs. A device that
moves leaves the boxes that hold its old position and not its new one: that is a second lookup,
at the old position (in a cell that holds both, only the boxes not covering it are checked), and
nothing is kept per device and watcher (a list of who saw each device would hold every departed
watcher for as long as the device stays quiet).

While any box is watched, the index also keeps each device's newest position, and a grid of
devices per 0.001-degree cell, so that a client that opens its box finds the devices in view
without a pass over every device, and one that moves it looks only at the cells of the strips it
gained or lost. Everything runs on one event loop; the router calls
:meth:`ViewportIndex.route` once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Protocol

from siscom.core.deliveries import Delivery
from siscom.core.geo import BBox, Position

__all__ = ["ViewportIndex", "Watcher"]

#: Cell size of the finest level, in degrees, and the growth factor between levels.
FINEST = 0.001
GROWTH = 2
#: Levels: the last one's cells (0.001 * 2**19 = 524 degrees) hold any box in one cell.
LEVELS = 20
#: Cell size of the device grid, in degrees (about 110 m): a pan visits the cells along the box's
#: edges, so their devices are what a pan costs beyond those that enter and leave.
DEVICE_CELL = 0.001
#: A box query visits cells while they number fewer than this many per device known, else
#: checks every device: looking up a cell costs a fraction of checking a device.
_CELLS_PER_DEVICE = 4

_Cell = tuple[int, int]
#: A box as its four numbers (west, south, east, north), for checks without a method call.
_Edges = tuple[float, float, float, float]
#: The watchers filed in one cell: those whose box covers the cell, and the others (checked).
_Filed = tuple[dict["Watcher", _Edges], dict["Watcher", _Edges]]
#: Degrees a cell's edges are widened by when judging whether a box covers it: a position is
#: put in a cell by a division that may round by far less than this.
_MARGIN = 1e-9


class Watcher(Protocol):
    def deliver_in_view(self, delivery: Delivery, now: float) -> None:
        """A record of a device whose newest position is in this watcher's box (or an alert of
        one), routed at ``now``."""

    def leave_view(self, device_id: str) -> None:
        """A device this watcher saw in its box has moved out of it."""


def _cell(lat: float, lon: float, size: float) -> _Cell:
    return math.floor(lon / size), math.floor(lat / size)


def _cells_of(box: BBox, size: float) -> Iterator[_Cell]:
    """The cells of one grid that a box (not crossing the antimeridian) touches."""
    for ix in range(math.floor(box.min_lon / size), math.floor(box.max_lon / size) + 1):
        for iy in range(math.floor(box.min_lat / size), math.floor(box.max_lat / size) + 1):
            yield ix, iy


def _overlap(a: BBox, b: BBox) -> bool:
    """Whether two boxes that do not cross the antimeridian share a point."""
    return a.min_lon <= b.max_lon and b.min_lon <= a.max_lon and a.min_lat <= b.max_lat and b.min_lat <= a.max_lat


def _outside(part: BBox, other: BBox | None) -> list[_Edges]:
    """Rectangles that together hold every point of ``part`` outside ``other`` (both not crossing
    the antimeridian): up to four strips, edges included, so they may hold a few points of ``other``."""
    if other is None or not _overlap(part, other):
        return [(part.min_lon, part.min_lat, part.max_lon, part.max_lat)]
    strips = []
    if part.min_lon < other.min_lon:
        strips.append((part.min_lon, part.min_lat, other.min_lon, part.max_lat))
    if part.max_lon > other.max_lon:
        strips.append((other.max_lon, part.min_lat, part.max_lon, part.max_lat))
    west, east = max(part.min_lon, other.min_lon), min(part.max_lon, other.max_lon)
    if part.min_lat < other.min_lat:
        strips.append((west, part.min_lat, east, other.min_lat))
    if part.max_lat > other.max_lat:
        strips.append((west, other.max_lat, east, part.max_lat))
    return strips


def _level_of(box: BBox) -> int:
    extent = max(box.width, box.max_lat - box.min_lat) / 4
    size = FINEST
    for level in range(LEVELS - 1):
        if size >= extent:
            return level
        size *= GROWTH
    return LEVELS - 1


_SIZES = [FINEST * GROWTH**level for level in range(LEVELS)]


def _covers(part: BBox, cell: _Cell, size: float) -> bool:
    """Whether ``part`` (not crossing the antimeridian) holds every position of ``cell`` that is
    on the map (cells at the edges reach past it)."""
    ix, iy = cell
    west, east = max(ix * size - _MARGIN, -180.0), min((ix + 1) * size + _MARGIN, 180.0)
    south, north = max(iy * size - _MARGIN, -90.0), min((iy + 1) * size + _MARGIN, 90.0)
    return part.min_lon <= west and part.max_lon >= east and part.min_lat <= south and part.max_lat >= north


class ViewportIndex:
    """Box watchers by grid cell, and (while any is watched) the newest position of each device."""

    def __init__(self, last_positions: Callable[[], Iterable[tuple[str, Position]]]) -> None:
        """``last_positions`` lists every device's newest known position; it is read when the
        first box is watched (until then no position is tracked)."""
        self._last_positions = last_positions
        #: Per level: cell -> the watchers filed there (covering it, or not), with their whole
        #: box's edges.
        self._grids: list[dict[_Cell, _Filed]] = [{} for _ in range(LEVELS)]
        #: (cell size, grid) of the levels holding any box: what a lookup visits.
        self._active: list[tuple[float, dict[_Cell, _Filed]]] = []
        self._boxes: dict[Watcher, tuple[BBox, int, list[_Cell]]] = {}
        self._where: dict[str, Position] = {}
        self._devices_by_cell: dict[_Cell, set[str]] = {}
        #: Devices checked by box queries so far (for measurements and tests).
        self.examined = 0

    def __len__(self) -> int:
        return len(self._boxes)

    @property
    def active(self) -> bool:
        return bool(self._boxes)

    # Watchers

    def watch(self, watcher: Watcher, box: BBox) -> None:
        """File (or move) ``watcher``'s box."""
        if not self._boxes:
            self._start_tracking()
        self._remove(watcher)
        level = _level_of(box)
        size = _SIZES[level]
        covered: dict[_Cell, bool] = {}
        for part in box.parts():
            for cell in _cells_of(part, size):
                covered[cell] = covered.get(cell, False) or _covers(part, cell, size)
        grid = self._grids[level]
        edges = (box.min_lon, box.min_lat, box.max_lon, box.max_lat)
        for cell, covers in covered.items():
            filed = grid.get(cell)
            if filed is None:
                filed = grid[cell] = ({}, {})
            filed[0 if covers else 1][watcher] = edges
        self._boxes[watcher] = (box, level, list(covered))
        self._refresh_levels()

    def unwatch(self, watcher: Watcher) -> None:
        self._remove(watcher)
        if not self._boxes:  # nobody watches: stop tracking positions
            self._where.clear()
            self._devices_by_cell.clear()

    def _remove(self, watcher: Watcher) -> None:
        entry = self._boxes.pop(watcher, None)
        if entry is None:
            return
        _, level, cells = entry
        grid = self._grids[level]
        for cell in cells:
            covering, other = grid[cell]
            if covering.pop(watcher, None) is None:
                del other[watcher]
            if not covering and not other:
                del grid[cell]
        self._refresh_levels()

    def box_of(self, watcher: Watcher) -> BBox | None:
        entry = self._boxes.get(watcher)
        return None if entry is None else entry[0]

    def _refresh_levels(self) -> None:
        self._active = [(_SIZES[level], grid) for level, grid in enumerate(self._grids) if grid]

    # Lookups

    def watchers_at(self, lat: float, lon: float) -> list[Watcher]:
        """The watchers whose box contains the position (each once: a watcher is filed at one
        level, and a position is in one cell of it)."""
        found: list[Watcher] = []
        floor = math.floor
        for size, grid in self._active:
            filed = grid.get((floor(lon / size), floor(lat / size)))
            if filed:
                covering, other = filed
                if covering:
                    found += covering
                for watcher, (west, south, east, north) in other.items():
                    if south <= lat <= north and (
                        west <= lon <= east if west <= east else (lon >= west or lon <= east)
                    ):
                        found.append(watcher)
        return found

    def _leavers(self, old: Position, new: Position) -> list[Watcher]:
        """The watchers whose box holds ``old`` and not ``new``. In a cell that holds both, the
        boxes covering it hold both: only the others are checked."""
        found: list[Watcher] = []
        floor = math.floor
        old_lat, old_lon = old
        lat, lon = new
        for size, grid in self._active:
            cell = (floor(old_lon / size), floor(old_lat / size))
            filed = grid.get(cell)
            if not filed:
                continue
            covering, other = filed
            if covering and cell != (floor(lon / size), floor(lat / size)):
                for watcher, (west, south, east, north) in covering.items():
                    if not (
                        south <= lat <= north
                        and (west <= lon <= east if west <= east else (lon >= west or lon <= east))
                    ):
                        found.append(watcher)
            for watcher, (west, south, east, north) in other.items():
                if (
                    south <= old_lat <= north
                    and (west <= old_lon <= east if west <= east else (old_lon >= west or old_lon <= east))
                ) and not (
                    south <= lat <= north and (west <= lon <= east if west <= east else (lon >= west or lon <= east))
                ):
                    found.append(watcher)
        return found

    def candidates_at(self, lat: float, lon: float) -> int:
        """How many boxes a lookup of this position checks exactly (for measurements)."""
        floor = math.floor
        return sum(
            len(filed[1])
            for size, grid in self._active
            if (filed := grid.get((floor(lon / size), floor(lat / size)))) is not None
        )

    def devices_in(self, box: BBox) -> list[str]:
        """The devices whose newest known position lies in ``box``."""
        where = self._where
        contains = box.contains
        parts = [(part.min_lon, part.min_lat, part.max_lon, part.max_lat) for part in box.parts()]
        return [device for device in self._candidates(parts) if contains(*where[device])]

    def devices_entering(self, old: BBox, new: BBox) -> list[str]:
        """The devices whose newest known position lies in ``new`` and not in ``old``: what a box
        moved from ``old`` to ``new`` gains (swap them for what it loses).

        Only the device cells of the strips of ``new`` outside ``old`` are visited, so a pan costs
        about the devices that enter and leave (and those in the cells along the edges), not the
        devices in view. :attr:`examined` counts the devices checked.
        """
        regions = [
            strip
            for part in new.parts()
            for strip in _outside(part, next((o for o in old.parts() if _overlap(part, o)), None))
        ]
        candidates = self._candidates(regions)
        where = self._where
        if new.crosses_antimeridian or old.crosses_antimeridian:
            return [d for d in candidates if new.contains(*where[d]) and not old.contains(*where[d])]
        # The common case written out: two plain boxes, no call per device.
        west, south, east, north = new.min_lon, new.min_lat, new.max_lon, new.max_lat
        old_west, old_south, old_east, old_north = old.min_lon, old.min_lat, old.max_lon, old.max_lat
        found = []
        for device in candidates:
            lat, lon = where[device]
            if (
                south <= lat <= north
                and west <= lon <= east
                and not (old_south <= lat <= old_north and old_west <= lon <= old_east)
            ):
                found.append(device)
        return found

    def _candidates(self, regions: list[_Edges]) -> Collection[str]:
        """The devices in the cells of ``regions`` (west, south, east, north; or, when those cells
        are many for the devices known, every device), each once; counted in :attr:`examined`."""
        where = self._where
        floor = math.floor
        spans = [
            (
                range(floor(west / DEVICE_CELL), floor(east / DEVICE_CELL) + 1),
                range(floor(south / DEVICE_CELL), floor(north / DEVICE_CELL) + 1),
            )
            for west, south, east, north in regions
        ]
        if sum(len(xs) * len(ys) for xs, ys in spans) >= _CELLS_PER_DEVICE * len(where):
            self.examined += len(where)
            return where.keys()
        get = self._devices_by_cell.get
        found: set[str] = set()  # strips may share the cells along their edges: each device once
        for xs, ys in spans:
            for ix in xs:
                for iy in ys:
                    devices = get((ix, iy))
                    if devices:
                        found |= devices
        self.examined += len(found)
        return found

    def position_of(self, device_id: str) -> Position | None:
        return self._where.get(device_id)

    # Routing

    def route(self, deliveries: Iterable[Delivery], now: float) -> None:
        """Hand each delivery to the watchers whose box holds its device, and tell those whose box
        the device has left (those that hold its old position and not its new one). Positions move
        the device; alerts go to the boxes its newest position is in; a record without a position
        is in no box (and does not move its device)."""
        where = self._where
        watchers_at = self.watchers_at
        leavers = self._leavers
        for delivery in deliveries:
            device_id = delivery.device_id
            if delivery.alert:
                old = where.get(device_id)
                if old is not None:
                    for watcher in watchers_at(*old):
                        watcher.deliver_in_view(delivery, now)
                continue
            new = delivery.position
            if new is None:
                continue
            old = where.get(device_id)
            if old != new:
                self._move(device_id, old, new)
            for watcher in watchers_at(*new):
                watcher.deliver_in_view(delivery, now)
            if old is not None and old != new:
                for watcher in leavers(old, new):
                    watcher.leave_view(device_id)

    def _move(self, device_id: str, old: Position | None, new: Position) -> None:
        self._where[device_id] = new
        cell = _cell(*new, DEVICE_CELL)
        if old is not None:
            old_cell = _cell(*old, DEVICE_CELL)
            if old_cell == cell:
                return
            devices = self._devices_by_cell[old_cell]
            devices.discard(device_id)
            if not devices:
                del self._devices_by_cell[old_cell]
        self._devices_by_cell.setdefault(cell, set()).add(device_id)

    def take_remembered(self) -> None:
        """Track the positions remembered without being routed (a late warm start's): a box watched
        since before them would not see those devices until they moved."""
        if self._boxes:
            self._start_tracking()

    def _start_tracking(self) -> None:
        for device_id, position in self._last_positions():
            self._move(device_id, self._where.get(device_id), position)
