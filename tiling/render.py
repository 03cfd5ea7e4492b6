"""Read a batch of tiles as one metatile with rio-tiler and encode the 256×256 tiles (PNG/JPEG).

Reading
    A batch is read once: ``rio_tiler.io.Reader.part`` on the batch bounds in the grid CRS
    (``TMS.rasterio_crs``, i.e. OGC:CRS84, the CRS ``Reader.tile`` uses), at exactly 256 px per tile.
    The warped VRT is built directly on the output grid and the GDAL warper kernel scale
    (``XSCALE``/``YSCALE``) is pinned to the real source/output pixel ratio. Without that, GDAL derives the
    scale from each warp chunk's source window, which changes with the chunk layout (and near the data
    edge), so the same tile would get slightly different pixels depending on how it was batched.
    When the output is coarser than the source, the coarsest source overview that is still at least as
    fine as the output is read (like ``gdalwarp -ovr AUTO``), so low zooms stay cheap.

Colour mapping to 8-bit (documented choice)
    * 3+ bands: the first 3 non-alpha bands are RGB; 1–2 bands: band 1 is grey (a single band with a
      colour table is expanded through it).
    * uint8 data is used as is. Other data types are rescaled linearly to 0..255 from one *dataset-wide*
      range (so that tiles of different batches match): the min/max of GDAL's approximate band statistics
      over the used bands (computed once per file and cached), falling back to the dtype range. Callers
      can force a range with ``rescale=(min, max)``.
    * Alpha = rio-tiler's mask (nodata / internal mask / alpha band) AND, if given, the footprint polygon.

Encoding
    ``mixed``: JPEG for fully opaque tiles, PNG (with alpha) for tiles with any transparency.
    ``png``: always PNG, without an alpha channel when the tile is fully opaque (like GDAL does).
    ``jpeg``: always JPEG; transparent pixels become black (JPEG has no alpha).
    Empty tiles (alpha all zero) are skipped. JPEG uses optimised Huffman tables (like GDAL: ~17% smaller
    at the same quality). PNG uses zlib level 6 (Pillow's bundled zlib-ng): on the benchmark imagery level 3
    is ~3× faster but ~4.5% larger than GDAL's PNGs (level 6 of classic zlib), too close to the size budget.

Pyramids
    With ``levels > 0`` a batch also yields the ``levels`` coarser zooms above it, built by 2×2 averaging
    of the finished finer zoom in memory (mean of the opaque children; a pixel is opaque when any child
    is), instead of reading the source again — like ``gdaladdo -r average``.

Fast path
    When the level read has exactly the output pixel size and its pixel lattice coincides with the tile
    grid (a source whose resolution sits on a zoom level, as benchmarks and most imagery prepared for
    tiling), warping is an identity: the window is read directly (bilinear at pixel centres would return
    the same values).
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.features
import shapely
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_bounds
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window
from rio_tiler.colormap import apply_cmap
from rio_tiler.errors import NoOverviewWarning
from rio_tiler.io import Reader
from rio_tiler.utils import non_alpha_indexes

from tiling.grid import TILE_SIZE, TMS, Batch, TileRange, parent_range, plan_batches, resolution_for_zoom

TileFormat = Literal["png", "jpeg"]
OutputFormat = Literal["png", "jpeg", "mixed"]
Resampling = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"]

GRID_CRS: CRS = TMS.rasterio_crs
_WGS84 = CRS.from_epsg(4326)
_FORMATS = ("png", "jpeg", "mixed")
#: Side (tiles) of the chunks in which a pyramid batch's finest zoom is read (memory: ~16 MB per chunk).
CHUNK_TILES = 8
#: zlib level of PNG tiles (see the module docstring).
DEFAULT_PNG_LEVEL = 6
#: GDAL block cache (MB) used while reading: metatile reads do not need more, and GDAL's default (5% of
#: the RAM) makes the resident size grow with the job.
GDAL_CACHE_MB = 128


@dataclass(frozen=True)
class EncodedTile:
    zoom: int
    col: int
    row: int
    data: bytes
    fmt: TileFormat


@dataclass(frozen=True)
class EncodeOptions:
    tile_format: OutputFormat = "mixed"
    jpeg_quality: int = 85
    png_compress_level: int = DEFAULT_PNG_LEVEL

    def __post_init__(self) -> None:
        if self.tile_format not in _FORMATS:
            raise ValueError(f"tile_format must be one of {_FORMATS}, got {self.tile_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level must be in 0..9, got {self.png_compress_level!r}")


# --------------------------------------------------------------------------------------------- encoding


def encode_tile(pixels: np.ndarray, alpha: np.ndarray, options: EncodeOptions) -> tuple[bytes, TileFormat]:
    """Encode one tile. ``pixels`` is (h, w, 3) RGB or (h, w) grey uint8, ``alpha`` a (h, w) bool array.

    Pixels under a transparent alpha must already be zeroed by the caller.
    """
    opaque = bool(alpha.all())
    fmt: TileFormat
    if options.tile_format == "jpeg" or (options.tile_format == "mixed" and opaque):
        fmt = "jpeg"
        image = Image.fromarray(np.ascontiguousarray(pixels))
    else:
        fmt = "png"
        if opaque:
            image = Image.fromarray(np.ascontiguousarray(pixels))
        else:
            a = alpha.astype(np.uint8) * 255
            # (h, w, 4) -> RGBA, (h, w, 2) -> LA
            image = Image.fromarray(np.ascontiguousarray(np.dstack([pixels, a])))
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, format="JPEG", quality=options.jpeg_quality, optimize=True)
    else:
        image.save(buf, format="PNG", compress_level=options.png_compress_level)
    return buf.getvalue(), fmt


# ----------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _SourcePlan:
    level: int | None
    """Overview level to open (``None`` = full resolution)."""
    src_res: tuple[float, float]
    """Pixel size (x, y) in degrees of the level that is read."""


def _res_in_grid_crs(src: rasterio.io.DatasetReader) -> tuple[float, float]:
    if src.crs == GRID_CRS or src.crs == _WGS84:
        return abs(src.transform.a), abs(src.transform.e)
    transform, _, _ = calculate_default_transform(src.crs, GRID_CRS, src.width, src.height, *src.bounds)
    return abs(transform.a), abs(transform.e)


def _plan_source(src: rasterio.io.DatasetReader, out_res: float) -> _SourcePlan:
    native = _res_in_grid_crs(src)
    factors = src.overviews(1) if src.count else []
    level: int | None = None
    res = native
    for i, factor in enumerate(factors):
        candidate = (
            native[0] * src.width / math.ceil(src.width / factor),
            native[1] * src.height / math.ceil(src.height / factor),
        )
        if max(candidate) <= out_res * (1 + 1e-6):
            level, res = i, candidate
    return _SourcePlan(level, res)


@functools.lru_cache(maxsize=64)
def _dataset_range(source: str, mtime: float, indexes: tuple[int, ...]) -> tuple[float, float]:
    with rasterio.open(source) as src:
        dtype = np.dtype(src.dtypes[indexes[0] - 1])
        try:
            stats = src.stats(indexes=list(indexes), approx=True)
            lo, hi = min(s.min for s in stats), max(s.max for s in stats)
            if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
                return float(lo), float(hi)
        except Exception:  # noqa: BLE001 - any statistics failure falls back to the dtype range
            pass
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return float(info.min), float(info.max)
        return 0.0, 1.0


def _source_mtime(source: str) -> float:
    try:
        return os.stat(source).st_mtime
    except OSError:
        return 0.0


def _to_uint8(data: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    lo, hi = rng
    scaled = (data.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _read_aligned(
    src: rasterio.io.DatasetReader, indexes: list[int], dst_transform: Any, width: int, height: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Direct window read when ``src`` has the output grid's pixel size and lattice, else ``None``.

    Returns ``(data (bands, height, width), alpha (height, width) bool)``; outside the raster: 0 and
    transparent. The mask is the alpha band when there is one (read with the colour bands), else GDAL's
    dataset mask (nodata / internal mask), as rio-tiler does.
    """
    if src.crs not in (GRID_CRS, _WGS84):
        return None
    t = src.transform
    res = dst_transform.a
    if t.b or t.d or abs(t.a - res) > res * 1e-9 or abs(-t.e - res) > res * 1e-9:
        return None
    fcol, frow = (dst_transform.c - t.c) / res, (t.f - dst_transform.f) / res
    col, row = round(fcol), round(frow)
    if abs(fcol - col) > 1e-6 or abs(frow - row) > 1e-6:
        return None
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + width, src.width), min(row + height, src.height)
    data = np.zeros((len(indexes), height, width), src.dtypes[indexes[0] - 1])
    alpha = np.zeros((height, width), bool)
    if c0 >= c1 or r0 >= r1:
        return data, alpha
    window = Window(c0, r0, c1 - c0, r1 - r0)
    ys, xs = slice(r0 - row, r1 - row), slice(c0 - col, c1 - col)
    alpha_band = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
    if alpha_band and src.dtypes[alpha_band[0] - 1] == "uint8":
        block = src.read(indexes + alpha_band[:1], window=window)
        data[:, ys, xs] = block[:-1]
        alpha[ys, xs] = block[-1] > 0
    else:
        data[:, ys, xs] = src.read(indexes, window=window)
        alpha[ys, xs] = src.dataset_mask(window=window) > 0
    return data, alpha


@dataclass
class Metatile:
    """A read block: ``pixels`` (H, W, 3) or (H, W) uint8, ``alpha`` (H, W) bool, its affine transform."""

    pixels: np.ndarray
    alpha: np.ndarray
    transform: Any


def read_metatile(
    source: str,
    batch: Batch,
    *,
    resampling: Resampling = "bilinear",
    rescale: tuple[float, float] | None = None,
) -> Metatile | None:
    """Read the whole batch in one go; ``None`` if the batch does not intersect the raster."""
    width, height = batch.ncols * TILE_SIZE, batch.nrows * TILE_SIZE
    bounds = batch.bounds
    out_res = resolution_for_zoom(batch.zoom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoOverviewWarning)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(source) as full:
            src_bounds = transform_bounds(full.crs, GRID_CRS, *full.bounds, densify_pts=21)
            if not (
                src_bounds[0] < bounds[2]
                and bounds[0] < src_bounds[2]
                and src_bounds[1] < bounds[3]
                and bounds[1] < src_bounds[3]
            ):
                return None
            plan = _plan_source(full, out_res)
            indexes = list(non_alpha_indexes(full))
            colormap = None
            if len(indexes) <= 2:
                indexes = indexes[:1]
                try:
                    colormap = full.colormap(indexes[0])
                except ValueError:
                    colormap = None
            else:
                indexes = indexes[:3]
        open_kwargs = {} if plan.level is None else {"overview_level": plan.level}
        dst_transform = from_bounds(*bounds, width, height)
        vrt_options = {
            "transform": dst_transform,
            "width": width,
            "height": height,
            # dst pixels per src pixel, pinned so the kernel does not depend on GDAL's warp chunking
            "XSCALE": repr(min(1.0, plan.src_res[0] / out_res)),
            "YSCALE": repr(min(1.0, plan.src_res[1] / out_res)),
        }
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(source, **open_kwargs) as src:
            direct = _read_aligned(src, indexes, dst_transform, width, height)
            if direct is not None:
                data, alpha = direct
            else:
                with Reader(source, dataset=src, tms=TMS) as reader:
                    img = reader.part(
                        bounds,
                        dst_crs=GRID_CRS,
                        bounds_crs=GRID_CRS,
                        width=width,
                        height=height,
                        indexes=indexes,
                        resampling_method=resampling,
                        reproject_method=resampling,
                        vrt_options=vrt_options,
                    )
                data = img.data
                alpha = img.mask > 0
    if colormap is not None and data.dtype == np.uint8:
        rgba, cmap_alpha = apply_cmap(data, colormap)
        data = rgba[:3]
        alpha &= cmap_alpha > 0
    elif data.dtype != np.uint8:
        rng = rescale or _dataset_range(source, _source_mtime(source), tuple(indexes))
        data = _to_uint8(data, rng)
    elif rescale is not None:
        data = _to_uint8(data, rescale)
    pixels = np.moveaxis(data, 0, -1) if data.shape[0] == 3 else data[0]
    return Metatile(np.ascontiguousarray(pixels), alpha, dst_transform)


# ------------------------------------------------------------------------------------------- footprint


def _footprint_relation(footprint: dict[str, Any], bounds: Sequence[float]) -> tuple[str, Any]:
    geom = shapely.geometry.shape(footprint)
    box = shapely.box(*bounds)
    if not geom.intersects(box):
        return "outside", geom
    if geom.contains(box):
        return "inside", geom
    return "partial", geom


def _footprint_mask(geom: Any, transform: Any, shape: tuple[int, int]) -> np.ndarray:
    """True inside the footprint (pixel centres)."""
    return rasterio.features.geometry_mask(
        [shapely.geometry.mapping(geom)], out_shape=shape, transform=transform, invert=True
    )


# ---------------------------------------------------------------------------------------------- public


def render_batch(
    source: str,
    batch: Batch,
    *,
    tile_format: OutputFormat = "mixed",
    resampling: Resampling = "bilinear",
    jpeg_quality: int = 85,
    png_compress_level: int = DEFAULT_PNG_LEVEL,
    footprint: dict[str, Any] | None = None,
    rescale: tuple[float, float] | None = None,
    levels: int = 0,
    clip_bounds: Sequence[float] | None = None,
) -> list[EncodedTile]:
    """Render every non-empty tile of ``batch`` from ``source`` (see the module docstring).

    ``levels``: also build that many coarser zooms from the batch (all of their tiles whose children lie
    in the batch; see :class:`tiling.grid.WorkUnit`). ``clip_bounds``: pixels outside these bounds
    (EPSG:4326) are transparent, like those outside ``footprint``.
    """
    options = EncodeOptions(tile_format, jpeg_quality, png_compress_level)
    read = functools.partial(
        _read_masked, source, resampling=resampling, rescale=rescale, footprint=footprint, clip_bounds=clip_bounds
    )
    if levels == 0 or max(batch.ncols, batch.nrows) <= CHUNK_TILES:
        block = read(batch)
        if block is None:
            return []
        pixels, alpha = block
        tiles = _encode_block(batch.zoom, batch.min_col, batch.min_row, pixels, alpha, options)
        zoom, col0, row0 = batch.zoom, batch.min_col, batch.min_row
    else:
        # memory stays flat: the finest zoom is read and encoded in chunks, each downsampled at once into
        # the canvas of the next zoom (chunks are aligned to an even number of tiles: no 2×2 group spans two)
        tiles = []
        parent = parent_range(batch, 1)
        shape = (parent.nrows * TILE_SIZE, parent.ncols * TILE_SIZE)
        alpha = np.zeros(shape, bool)
        pixels = None
        for chunk in plan_batches([TileRange(*_block_tuple(batch))], CHUNK_TILES * CHUNK_TILES):
            block = read(chunk)
            if block is None:
                continue
            tiles += _encode_block(chunk.zoom, chunk.min_col, chunk.min_row, *block, options)
            small, small_alpha, c0, r0 = _pad_even(*block, chunk.min_col, chunk.min_row)
            del block
            small, small_alpha = downsample2(small, small_alpha)
            if pixels is None:
                pixels = np.zeros(shape + small.shape[2:], np.uint8)
            y0, x0 = (r0 // 2 - parent.min_row) * TILE_SIZE, (c0 // 2 - parent.min_col) * TILE_SIZE
            h, w = small_alpha.shape
            # padded chunks may overlap their neighbours with transparent pixels: merge, never overwrite
            np.maximum(pixels[y0 : y0 + h, x0 : x0 + w], small, out=pixels[y0 : y0 + h, x0 : x0 + w])
            alpha[y0 : y0 + h, x0 : x0 + w] |= small_alpha
        if pixels is None:
            return tiles
        tiles += _encode_block(parent.zoom, parent.min_col, parent.min_row, pixels, alpha, options)
        zoom, col0, row0, levels = parent.zoom, parent.min_col, parent.min_row, levels - 1
    for _ in range(levels):
        pixels, alpha, col0, row0 = _pad_even(pixels, alpha, col0, row0)
        pixels, alpha = downsample2(pixels, alpha)
        zoom, col0, row0 = zoom - 1, col0 // 2, row0 // 2
        tiles += _encode_block(zoom, col0, row0, pixels, alpha, options)
    return tiles


def _block_tuple(block: Batch) -> tuple[int, int, int, int, int]:
    return block.zoom, block.min_col, block.min_row, block.max_col, block.max_row


def _read_masked(
    source: str,
    batch: Batch,
    *,
    resampling: Resampling,
    rescale: tuple[float, float] | None,
    footprint: dict[str, Any] | None,
    clip_bounds: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pixels, alpha)`` of a batch with footprint/clip applied and transparent pixels zeroed, or ``None``
    when nothing of it is visible."""
    geom = None
    if footprint is not None:
        relation, geom = _footprint_relation(footprint, batch.bounds)
        if relation == "outside":
            return None
        if relation == "inside":
            geom = None
    meta = read_metatile(source, batch, resampling=resampling, rescale=rescale)
    if meta is None:
        return None
    alpha = meta.alpha
    if geom is not None:
        alpha &= _footprint_mask(geom, meta.transform, alpha.shape)
    if clip_bounds is not None:
        _clip_alpha(alpha, meta.transform, clip_bounds)
    if not alpha.any():
        return None
    pixels = meta.pixels
    if not alpha.all():
        pixels[~alpha] = 0
    return pixels, alpha


def _encode_block(
    zoom: int, col0: int, row0: int, pixels: np.ndarray, alpha: np.ndarray, options: EncodeOptions
) -> list[EncodedTile]:
    """Encode the non-empty 256×256 tiles of a block whose top-left tile is ``(col0, row0)``."""
    tiles: list[EncodedTile] = []
    for y0 in range(0, alpha.shape[0], TILE_SIZE):
        for x0 in range(0, alpha.shape[1], TILE_SIZE):
            tile_alpha = alpha[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE]
            if not tile_alpha.any():
                continue
            data, fmt = encode_tile(pixels[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE], tile_alpha, options)
            tiles.append(EncodedTile(zoom, col0 + x0 // TILE_SIZE, row0 + y0 // TILE_SIZE, data, fmt))
    return tiles


def _pad_even(
    pixels: np.ndarray, alpha: np.ndarray, col0: int, row0: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Pad a block with transparent tiles so that it starts and ends on even tile indices."""
    ncols, nrows = alpha.shape[1] // TILE_SIZE, alpha.shape[0] // TILE_SIZE
    left, top = col0 % 2, row0 % 2
    right, bottom = (col0 + ncols) % 2, (row0 + nrows) % 2
    if not (left or top or right or bottom):
        return pixels, alpha, col0, row0
    t = TILE_SIZE
    shape = ((nrows + top + bottom) * t, (ncols + left + right) * t)
    new_alpha = np.zeros(shape, bool)
    new_pixels = np.zeros(shape + pixels.shape[2:], pixels.dtype)
    ys, xs = slice(top * t, top * t + alpha.shape[0]), slice(left * t, left * t + alpha.shape[1])
    new_alpha[ys, xs] = alpha
    new_pixels[ys, xs] = pixels
    return new_pixels, new_alpha, col0 - left, row0 - top


def downsample2(pixels: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Halve a block: each output pixel is the rounded mean of its opaque 2×2 children (transparent
    children are ignored); it is opaque when any child is. ``pixels`` under transparent alpha must be 0.
    """
    h, w = alpha.shape
    if h % 2 or w % 2:
        raise ValueError(f"block size must be even, got {w}x{h}")
    acc = pixels[0::2, 0::2].astype(np.uint16)
    acc += pixels[1::2, 0::2]
    acc += pixels[0::2, 1::2]
    acc += pixels[1::2, 1::2]
    if alpha.all():
        acc += 2
        acc >>= 2
        return acc.astype(np.uint8), np.ones((h // 2, w // 2), bool)
    count = alpha[0::2, 0::2].astype(np.uint8)
    count += alpha[1::2, 0::2]
    count += alpha[0::2, 1::2]
    count += alpha[1::2, 1::2]
    opaque = count > 0
    div = np.maximum(count, 1).astype(np.uint16)
    if acc.ndim == 3:
        div = div[..., None]
    acc += div >> 1
    acc //= div
    return acc.astype(np.uint8), opaque


def _clip_alpha(alpha: np.ndarray, transform: Any, bounds: Sequence[float]) -> None:
    """Clear ``alpha`` (in place) at pixels whose centre is outside ``bounds``."""
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    inv = ~transform
    c0, r0 = inv * (minx, maxy)
    c1, r1 = inv * (maxx, miny)
    h, w = alpha.shape
    c0, c1 = (min(max(math.ceil(c - 0.5 - 1e-6), 0), w) for c in (c0, c1))
    r0, r1 = (min(max(math.ceil(r - 0.5 - 1e-6), 0), h) for r in (r0, r1))
    alpha[:r0] = False
    alpha[r1:] = False
    alpha[:, :c0] = False
    alpha[:, c1:] = False


def render_tiles_iter(source: str, batches: Iterable[Batch], **kwargs: Any) -> Iterator[EncodedTile]:
    """Render ``batches`` one after the other (same keyword arguments as :func:`render_batch`)."""
    for batch in batches:
        yield from render_batch(source, batch, **kwargs)


def decode_tile(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a tile to ``(rgb (256, 256, 3) uint8, alpha (256, 256) bool)`` (testing/debugging helper)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    rgba = np.asarray(image.convert("RGBA"))
    return rgba[..., :3].copy(), rgba[..., 3] > 0
