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
    Empty tiles (alpha all zero) are skipped.
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
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_bounds
from rasterio.warp import calculate_default_transform, transform_bounds
from rio_tiler.colormap import apply_cmap
from rio_tiler.errors import NoOverviewWarning
from rio_tiler.io import Reader
from rio_tiler.utils import non_alpha_indexes

from tiling.grid import TILE_SIZE, TMS, Batch, resolution_for_zoom

TileFormat = Literal["png", "jpeg"]
OutputFormat = Literal["png", "jpeg", "mixed"]
Resampling = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"]

GRID_CRS: CRS = TMS.rasterio_crs
_WGS84 = CRS.from_epsg(4326)
_FORMATS = ("png", "jpeg", "mixed")


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
    png_compress_level: int = 6

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
        image.save(buf, format="JPEG", quality=options.jpeg_quality)
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
        with rasterio.open(source, **open_kwargs) as src, Reader(source, dataset=src, tms=TMS) as reader:
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
    png_compress_level: int = 6,
    footprint: dict[str, Any] | None = None,
    rescale: tuple[float, float] | None = None,
) -> list[EncodedTile]:
    """Render every non-empty tile of ``batch`` from ``source`` (see the module docstring)."""
    options = EncodeOptions(tile_format, jpeg_quality, png_compress_level)
    geom = None
    if footprint is not None:
        relation, geom = _footprint_relation(footprint, batch.bounds)
        if relation == "outside":
            return []
        if relation == "inside":
            geom = None
    meta = read_metatile(source, batch, resampling=resampling, rescale=rescale)
    if meta is None:
        return []
    alpha = meta.alpha
    if geom is not None:
        alpha &= _footprint_mask(geom, meta.transform, alpha.shape)
    if not alpha.any():
        return []
    pixels = meta.pixels
    if not alpha.all():
        pixels[~alpha] = 0
    tiles: list[EncodedTile] = []
    for col, row in batch:
        y0 = (row - batch.min_row) * TILE_SIZE
        x0 = (col - batch.min_col) * TILE_SIZE
        tile_alpha = alpha[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE]
        if not tile_alpha.any():
            continue
        data, fmt = encode_tile(pixels[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE], tile_alpha, options)
        tiles.append(EncodedTile(batch.zoom, col, row, data, fmt))
    return tiles


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
