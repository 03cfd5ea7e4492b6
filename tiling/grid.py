"""EPSG:4326 tile grid (OGC ``WorldCRS84Quad``): planning of pyramids and batches.

Zoom 0 is 2×1 tiles of 256 px, the pixel size at zoom ``z`` is ``180 / 256 / 2**z`` degrees and row 0
is at the north. Tile coordinates here are always *global* grid indices (the same ones stored in a
GeoPackage whose ``gpkg_tile_matrix_set`` covers -180,-90,180,90).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TILE_SIZE = 256
#: Pixel size (degrees) at zoom 0.
ZOOM0_RESOLUTION = 180.0 / TILE_SIZE  # 0.703125
#: The finest zoom the service accepts.
MAX_ZOOM = 30
#: Relative tolerance used when comparing resolutions (absorbs float noise in requests).
RES_REL_TOL = 1e-9
#: Tolerance, in tile units, used when deciding which tiles a bbox touches.
_EDGE_EPS = 1e-6

BBox = tuple[float, float, float, float]


def _check_zoom(zoom: int) -> int:
    if isinstance(zoom, bool) or not isinstance(zoom, int) or zoom < 0 or zoom > MAX_ZOOM:
        raise ValueError(f"zoom must be an integer in 0..{MAX_ZOOM}, got {zoom!r}")
    return zoom


def resolution_for_zoom(z: int) -> float:
    """Pixel size in degrees of zoom ``z`` (``180 / 256 / 2**z``)."""
    return ZOOM0_RESOLUTION / (1 << _check_zoom(z))


def tile_size_deg(z: int) -> float:
    """Width (= height) of one tile of zoom ``z`` in degrees."""
    return 180.0 / (1 << _check_zoom(z))


def matrix_size(z: int) -> tuple[int, int]:
    """``(matrix_width, matrix_height)`` of zoom ``z``: ``(2 * 2**z, 2**z)``."""
    n = 1 << _check_zoom(z)
    return 2 * n, n


def zoom_for_resolution(res: float, max_zoom: int = MAX_ZOOM) -> int:
    """Finest zoom whose pixel is not finer than ``res`` degrees: ``floor(log2(0.703125 / res))``.

    A relative tolerance of ``1e-9`` absorbs float noise (``0.0000429153442382812`` → 14, and a value a
    hair coarser than an exact zoom resolution still maps to that zoom). Resolutions coarser than
    zoom 0 map to zoom 0. Raises ``ValueError`` for non-finite or non-positive values and for a
    resolution finer than the resolution of ``max_zoom``.
    """
    try:
        value = float(res)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"resolution must be a number, got {res!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"resolution must be a finite number > 0 (degrees/pixel), got {res!r}")
    _check_zoom(max_zoom)
    finest = resolution_for_zoom(max_zoom)
    if value < finest * (1 - RES_REL_TOL):
        raise ValueError(
            f"resolution {value!r} deg/px is finer than zoom {max_zoom} ({finest!r} deg/px), "
            "the finest supported level"
        )
    ratio = ZOOM0_RESOLUTION / value
    if ratio <= 1:
        return 0
    zoom = math.floor(math.log2(ratio * (1 + RES_REL_TOL)))
    return max(0, min(zoom, max_zoom))


def _tile_bounds(zoom: int, min_col: int, min_row: int, max_col: int, max_row: int) -> BBox:
    size = tile_size_deg(zoom)
    return (
        -180.0 + min_col * size,
        90.0 - (max_row + 1) * size,
        -180.0 + (max_col + 1) * size,
        90.0 - min_row * size,
    )


class _Block:
    """Shared behaviour of an inclusive rectangle of tiles of one zoom."""

    zoom: int
    min_col: int
    min_row: int
    max_col: int
    max_row: int

    def _validate(self) -> None:
        _check_zoom(self.zoom)
        width, height = matrix_size(self.zoom)
        if not (0 <= self.min_col <= self.max_col < width and 0 <= self.min_row <= self.max_row < height):
            raise ValueError(
                f"invalid tile block z{self.zoom} cols {self.min_col}..{self.max_col} "
                f"rows {self.min_row}..{self.max_row} (matrix {width}x{height})"
            )

    @property
    def ncols(self) -> int:
        return self.max_col - self.min_col + 1

    @property
    def nrows(self) -> int:
        return self.max_row - self.min_row + 1

    @property
    def count(self) -> int:
        return self.ncols * self.nrows

    @property
    def bounds(self) -> BBox:
        """``(minx, miny, maxx, maxy)`` in degrees of the whole block."""
        return _tile_bounds(self.zoom, self.min_col, self.min_row, self.max_col, self.max_row)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Yield ``(col, row)`` row by row, north to south, west to east."""
        for row in range(self.min_row, self.max_row + 1):
            for col in range(self.min_col, self.max_col + 1):
                yield col, row

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        col, row = item
        return self.min_col <= col <= self.max_col and self.min_row <= row <= self.max_row


@dataclass(frozen=True)
class TileRange(_Block):
    """Inclusive range of tiles of one zoom."""

    zoom: int
    min_col: int
    min_row: int
    max_col: int
    max_row: int

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True)
class Batch(_Block):
    """A rectangular block of tiles (a metatile) rendered in one read. JSON-friendly."""

    zoom: int
    min_col: int
    min_row: int
    max_col: int
    max_row: int

    def __post_init__(self) -> None:
        self._validate()

    @property
    def key(self) -> str:
        """Stable identifier usable in file names, e.g. ``z14-c100-r20-c115-r35``."""
        return f"z{self.zoom}-c{self.min_col}-r{self.min_row}-c{self.max_col}-r{self.max_row}"

    def to_dict(self) -> dict[str, int]:
        return {
            "zoom": self.zoom,
            "min_col": self.min_col,
            "min_row": self.min_row,
            "max_col": self.max_col,
            "max_row": self.max_row,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        return cls(
            zoom=int(data["zoom"]),
            min_col=int(data["min_col"]),
            min_row=int(data["min_row"]),
            max_col=int(data["max_col"]),
            max_row=int(data["max_row"]),
        )


def _check_bbox(bbox: Iterable[float]) -> BBox:
    values = tuple(float(v) for v in bbox)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"bbox must be 4 finite numbers (minx, miny, maxx, maxy), got {bbox!r}")
    minx, miny, maxx, maxy = values
    minx, maxx = max(minx, -180.0), min(maxx, 180.0)
    miny, maxy = max(miny, -90.0), min(maxy, 90.0)
    if not (minx < maxx and miny < maxy):
        raise ValueError(f"bbox {bbox!r} is empty or outside -180,-90,180,90 (expected minx<maxx, miny<maxy)")
    return minx, miny, maxx, maxy


def tile_range(bbox: Iterable[float], zoom: int) -> TileRange:
    """Tiles of ``zoom`` whose area intersects ``bbox`` (EPSG:4326) with a positive area.

    A bbox edge lying exactly on (or within 1e-6 tile of) a tile edge does not pull in the neighbour.
    The bbox is clipped to the world extent first.
    """
    minx, miny, maxx, maxy = _check_bbox(bbox)
    size = tile_size_deg(zoom)
    width, height = matrix_size(zoom)
    fx0, fx1 = (minx + 180.0) / size, (maxx + 180.0) / size
    fy0, fy1 = (90.0 - maxy) / size, (90.0 - miny) / size
    min_col = min(max(math.floor(fx0 + _EDGE_EPS), 0), width - 1)
    max_col = min(max(math.ceil(fx1 - _EDGE_EPS) - 1, min_col), width - 1)
    min_row = min(max(math.floor(fy0 + _EDGE_EPS), 0), height - 1)
    max_row = min(max(math.ceil(fy1 - _EDGE_EPS) - 1, min_row), height - 1)
    return TileRange(zoom, min_col, min_row, max_col, max_row)


def snap_bbox(bbox: Iterable[float], zoom: int) -> BBox:
    """The bbox snapped outwards to the tile grid of ``zoom`` (bounds of :func:`tile_range`)."""
    return tile_range(bbox, zoom).bounds


def plan_pyramid(bbox: Iterable[float], max_zoom: int, min_zoom: int = 0) -> list[TileRange]:
    """One :class:`TileRange` per zoom from ``min_zoom`` to ``max_zoom`` (inclusive, ascending)."""
    _check_zoom(max_zoom)
    _check_zoom(min_zoom)
    if min_zoom > max_zoom:
        raise ValueError(f"min_zoom ({min_zoom}) must be <= max_zoom ({max_zoom})")
    box = _check_bbox(bbox)
    return [tile_range(box, z) for z in range(min_zoom, max_zoom + 1)]


def plan_batches(ranges: Iterable[TileRange], batch_tiles: int = 256) -> list[Batch]:
    """Split every range into square-ish blocks of at most ``batch_tiles`` tiles.

    Blocks have a side of ``floor(sqrt(batch_tiles))`` tiles and are aligned to multiples of that side in
    *global* column/row indices, so the same job always produces the same batches (and batch files can
    be reused). Every tile of every range belongs to exactly one batch. Order: zoom ascending, then
    block row, then block column.
    """
    if isinstance(batch_tiles, bool) or not isinstance(batch_tiles, int) or batch_tiles < 1:
        raise ValueError(f"batch_tiles must be a positive integer, got {batch_tiles!r}")
    side = math.isqrt(batch_tiles)
    batches: list[Batch] = []
    for rng in sorted(ranges, key=lambda r: r.zoom):
        for block_row in range(rng.min_row // side, rng.max_row // side + 1):
            row0 = max(block_row * side, rng.min_row)
            row1 = min(block_row * side + side - 1, rng.max_row)
            for block_col in range(rng.min_col // side, rng.max_col // side + 1):
                col0 = max(block_col * side, rng.min_col)
                col1 = min(block_col * side + side - 1, rng.max_col)
                batches.append(Batch(rng.zoom, col0, row0, col1, row1))
    return batches


# ------------------------------------------------------------------------------------ pyramid planning


def parent_range(block: _Block, levels: int) -> TileRange:
    """The tiles of zoom ``block.zoom - levels`` that cover ``block`` (its ancestors ``levels`` up)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 0 <= levels <= block.zoom:
        raise ValueError(f"levels must be an integer in 0..{block.zoom}, got {levels!r}")
    return TileRange(
        block.zoom - levels,
        block.min_col >> levels,
        block.min_row >> levels,
        block.max_col >> levels,
        block.max_row >> levels,
    )


@dataclass(frozen=True)
class WorkUnit:
    """A batch read from the source, plus ``levels`` coarser zooms built by downsampling it in memory.

    ``batch`` is aligned to multiples of ``2**levels`` tiles in global indices (unless clipped by the job
    extent), so every tile of zoom ``batch.zoom - j`` (``j <= levels``) produced by a unit has all its
    children in that unit: units never overlap and never need each other.
    """

    batch: Batch
    levels: int = 0

    def __post_init__(self) -> None:
        parent_range(self.batch, self.levels)  # validates

    def ranges(self) -> list[TileRange]:
        """The tiles this unit produces, finest zoom first."""
        return [parent_range(self.batch, j) for j in range(self.levels + 1)]

    @property
    def count(self) -> int:
        return sum(r.count for r in self.ranges())


#: Default finest-zoom tiles of a pyramid work unit per ``batch_tiles`` (256 → 1,024: 32 × 32 tiles): few
#: enough units that per-task bookkeeping stays small, flat memory whatever the size (quadtree rendering)
UNITS_PER_BATCH = 4


def pyramid_side(batch_tiles: int) -> int:
    """Side (tiles) of a pyramid unit's finest block: the largest power of two <= ``sqrt(batch_tiles)``."""
    if isinstance(batch_tiles, bool) or not isinstance(batch_tiles, int) or batch_tiles < 1:
        raise ValueError(f"batch_tiles must be a positive integer, got {batch_tiles!r}")
    return 1 << (math.isqrt(batch_tiles).bit_length() - 1)


def plan_units(
    bbox: Iterable[float],
    max_zoom: int,
    min_zoom: int = 0,
    batch_tiles: int = 256,
    unit_tiles: int | None = None,
) -> tuple[list[TileRange], list[WorkUnit]]:
    """Plan a pyramid job as work units: ``(ranges per zoom ascending, units)``.

    The finest zoom is split into aligned blocks of ``side = pyramid_side(unit_tiles or batch_tiles)``
    tiles; each block's unit also builds the ``levels = log2(side)`` coarser zooms (capped at
    ``max_zoom - min_zoom``) by 2×2 downsampling. The zooms coarser than that are planned the same way,
    one level group after the other: the next coarser zoom is read from the source in blocks of ``side``
    tiles that build the ``log2(side)`` zooms above them, and so on down to ``min_zoom`` (a job of zooms
    0–14 with ``side`` 16 has units at zooms 14, 9 and 4). The ranges of the coarser zooms are the
    ancestors of the finest range (so the pyramid holds exactly the finest zoom's extent at every zoom).
    Order: the finest zoom's units, then the coarser groups from fine to coarse. Every tile of every range
    belongs to exactly one unit; :func:`unit_levels` recovers each unit's ``levels`` from the zooms of all
    the units.
    """
    _check_zoom(max_zoom)
    _check_zoom(min_zoom)
    if min_zoom > max_zoom:
        raise ValueError(f"min_zoom ({min_zoom}) must be <= max_zoom ({max_zoom})")
    side = pyramid_side(batch_tiles if unit_tiles is None else unit_tiles)
    top = tile_range(bbox, max_zoom)
    ranges = [parent_range(top, max_zoom - z) for z in range(min_zoom, max_zoom + 1)]
    units: list[WorkUnit] = []
    zoom = max_zoom
    while zoom >= min_zoom:
        levels = min(side.bit_length() - 1, zoom - min_zoom)
        units += [WorkUnit(b, levels) for b in plan_batches([parent_range(top, max_zoom - zoom)], side * side)]
        zoom -= levels + 1
    return ranges, units


def unit_levels(batch_zoom: int, max_zoom: int, batch_zooms: Iterable[int], min_zoom: int = 0) -> int:
    """The ``levels`` of a planned batch, recovered from the zooms of all the job's batches.

    A batch builds the coarser zooms down to (excluding) the next coarser zoom that has batches of its
    own, or down to ``min_zoom``. A job planned batch-per-zoom gets 0 everywhere (``max_zoom`` is kept
    for the callers; batches of a zoom above it do not exist).
    """
    below = [z for z in batch_zooms if z < batch_zoom]
    return batch_zoom - 1 - max(below) if below else batch_zoom - min_zoom


#: Default per-tile size used by :func:`estimate_package_bytes`: a pessimistic figure for a 256×256
#: tile (a JPEG q85 of imagery is typically 10–40 kB, a PNG with transparency 50–120 kB).
DEFAULT_BYTES_PER_TILE = 128 * 1024
#: Fixed overhead of a package (SQLite pages, GeoPackage tables, footprint layer, sidecar).
PACKAGE_OVERHEAD_BYTES = 1024 * 1024
#: SQLite row + index overhead per tile.
_ROW_OVERHEAD_BYTES = 64


def estimate_package_bytes(ranges: Iterable[TileRange], bytes_per_tile: int = DEFAULT_BYTES_PER_TILE) -> int:
    """Rough upper bound of the size of a package holding every tile of ``ranges``.

    Empty tiles are not stored, so real packages are usually much smaller; use this to refuse jobs
    that cannot fit on the free disk space, not to predict sizes.
    """
    tiles = sum(r.count for r in ranges)
    return PACKAGE_OVERHEAD_BYTES + tiles * (int(bytes_per_tile) + _ROW_OVERHEAD_BYTES)


@functools.cache
def _tms() -> Any:
    import morecantile  # ~0.3 s of pydantic model building at import: only paid by code that uses it

    return morecantile.tms.get("WorldCRS84Quad")


def __getattr__(name: str) -> Any:
    """``TMS``: morecantile's ``WorldCRS84Quad`` (the grid this module implements), built on first use."""
    if name == "TMS":
        return _tms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
