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
    at the same quality), encoded by libjpeg-turbo through imagecodecs (see :func:`encode_jpeg`). PNG uses
    zlib level 6 (Pillow's bundled zlib-ng): on the benchmark imagery level 3 is ~3× faster but ~4.5%
    larger than GDAL's PNGs (level 6 of classic zlib), too close to the size budget.

Pyramids
    With ``levels > 0`` a batch also yields the ``levels`` coarser zooms above it, built by 2×2 averaging
    of the finished finer zoom in memory (mean of the opaque children; a pixel is opaque when any child
    is), instead of reading the source again — like ``gdaladdo -r average``. A batch larger than a chunk is
    walked as a quadtree: the finest zoom is read in chunks of at most ``CHUNK_TILES``² tiles and each
    square only hands its single top tile to its parent, so memory does not grow with the unit size.

Parallelism
    With ``pool`` (normally :func:`encode_pool`, one thread per core), the calling thread only reads and
    downsamples; tiles are encoded on the pool (the PNG and JPEG encoders used release the GIL) and come
    back in order, at most ``MAX_PENDING_ENCODES`` at a time. Every render call of a process shares the
    pool, so the cores stay busy until the last tile of a job. ``emit`` streams the tiles out as they are
    encoded.

Fast path
    When the level read has exactly the output pixel size and its pixel lattice coincides with the tile
    grid (a source whose resolution sits on a zoom level, as benchmarks and most imagery prepared for
    tiling), warping is an identity: the window is read directly (bilinear at pixel centres would return
    the same values). A tiled, pixel-interleaved 8-bit RGB(A) GeoTIFF (a COG) is then read block by block
    without GDAL (:mod:`tiling.tiff_blocks`); other 8-bit RGB sources by GDAL in strips.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import ctypes
import functools
import io
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.features
import shapely
from imagecodecs import JPEG8, jpeg8_encode
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_bounds
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from tiling.grid import TILE_SIZE, Batch, resolution_for_zoom
from tiling.tiff_blocks import TiffBlocks, blocks_for

TileFormat = Literal["png", "jpeg"]
OutputFormat = Literal["png", "jpeg", "mixed"]
Resampling = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"]

#: the grid's CRS: ``TMS.rasterio_crs`` of morecantile's WorldCRS84Quad (OGC:CRS84), written out so that
#: aligned reads never import morecantile (tested equal)
GRID_CRS: CRS = CRS.from_user_input("OGC:CRS84")
_WGS84 = CRS.from_epsg(4326)
_FORMATS = ("png", "jpeg", "mixed")
#: Side (tiles) of the chunks in which a pyramid batch's finest zoom is read (memory: ~16 MB per chunk).
CHUNK_TILES = 8
#: zlib level of PNG tiles (see the module docstring).
DEFAULT_PNG_LEVEL = 6
#: GDAL block cache while reading, in *bytes*: rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64
#: as bytes (checked: GDALGetCacheMax64() is 96 inside ``rasterio.Env(GDAL_CACHEMAX=96)``; earlier rounds
#: took it for 96 MB). So GDAL keeps no decoded block between two reads: neighbouring chunks decode the
#: source blocks on their common border twice. That is what the memory budget of the flow processes was
#: measured with (the large benchmark job: 476-491 MB summed PSS of 500); GDAL's default (5% of the RAM)
#: would make the resident size grow with the job.
GDAL_CACHEMAX = 96
#: Rows per GDAL read of an aligned RGB block (see :func:`_read_aligned_rgb`).
STRIP_ROWS = 1024


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

#: Tiles a render call may have queued on the encode pool before it waits for the oldest one (bounds the
#: pixel buffers kept alive by pending encodes: about one chunk of the finest zoom per render thread). Two
#: chunks were measured no faster on the default benchmark job and 44 MB heavier at peak (277 vs 233 MB).
MAX_PENDING_ENCODES = CHUNK_TILES * CHUNK_TILES
#: glibc raises its mmap threshold (up to 32 MB) each time a large mmapped block is freed; from then on
#: metatile-sized numpy buffers are carved from the heaps of the threads and rarely returned, so the
#: resident size of a long render creeps up by hundreds of MB. Setting the threshold pins it: buffers of
#: 256 kB and more stay mmapped and go back to the system when freed (measured: a flow-run process on the
#: default benchmark job peaks at ~350 MB instead of ~480 MB, same speed).
MALLOC_MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3
_malloc_tuned = False
_ENCODE_POOL: cf.ThreadPoolExecutor | None = None
_ENCODE_POOL_PID = 0
_ENCODE_POOL_LOCK = threading.Lock()


def _tune_malloc() -> None:
    """Pin glibc's mmap threshold (see ``MALLOC_MMAP_THRESHOLD``) once per process; no-op elsewhere."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def encode_pool() -> cf.ThreadPoolExecutor:
    """The process-wide tile encode pool: one thread per core.

    Pillow's PNG encoder, imagecodecs' JPEG encoder and numpy release the GIL, so threads encode in parallel
    without pickling tiles between processes. Render calls only *read* and downsample; they hand every
    tile to this pool, so all cores stay busy until the last tile of a job (no idle core while one big unit
    finishes). A forked child gets a pool of its own (the parent's threads do not exist there).
    """
    global _ENCODE_POOL, _ENCODE_POOL_PID
    with _ENCODE_POOL_LOCK:
        if _ENCODE_POOL is None or _ENCODE_POOL_PID != os.getpid():
            _ENCODE_POOL = cf.ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="encode")
            _ENCODE_POOL_PID = os.getpid()
        return _ENCODE_POOL


def rgbx_block(height: int, width: int) -> np.ndarray:
    """An uninitialised RGB block stored with 4 bytes per pixel: the ``[..., :3]`` view of an (h, w, 4) array.

    Pillow keeps RGB images as 4 bytes per pixel, and libjpeg-turbo reads RGBX rows directly: blocks stored
    this way are handed to Pillow's 2×2 reduction in place (mode "RGBX", no unpacking copy into a freshly
    zeroed image) and to the JPEG encoder without packing. Every function here accepts either layout."""
    return np.empty((height, width, 4), np.uint8)[..., :3]


def _rgbx(pixels: np.ndarray, writeable: bool = False) -> np.ndarray | None:
    """The (h, w, 4) view under an RGB view made by :func:`rgbx_block` (or sliced from one), else ``None``.

    The fourth byte of each pixel is padding (or a source alpha): never interpreted."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.strides[1:] != (4, 1):
        return None
    return np.lib.stride_tricks.as_strided(pixels, shape=pixels.shape[:2] + (4,),
                                           strides=pixels.strides[:2] + (1,), writeable=writeable)


def _flat_rows(pixels: np.ndarray, bytes_per_pixel: int) -> tuple[np.ndarray, int]:
    """A 1-D byte view from a (strided) block's first byte to its last one, and its row stride: Pillow reads
    it row by row (the bytes between rows belong to the enclosing block and are skipped)."""
    h, w = pixels.shape[:2]
    stride = pixels.strides[0]
    flat = np.lib.stride_tricks.as_strided(pixels, shape=((h - 1) * stride + w * bytes_per_pixel,), strides=(1,),
                                           writeable=False)
    return flat, stride


def _image(pixels: np.ndarray) -> Image.Image:
    """A Pillow image of an RGB or grey tile. A tile sliced out of a block is read in place, row by row
    (Pillow copies it once into its own storage), instead of being made contiguous first."""
    h, w = pixels.shape[:2]
    if _rgbx(pixels) is not None:
        flat, stride = _flat_rows(pixels, 4)
        # frombytes: frombuffer would try to map an "RGBX" raw mode in place (needs a full last row)
        return Image.frombytes("RGB", (w, h), flat, "raw", "RGBX", stride, 1)
    if pixels.flags.c_contiguous or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.strides[1:] != (3, 1):
        return Image.fromarray(np.ascontiguousarray(pixels))
    # "RGB" is not a mode Pillow maps in place, so frombuffer unpacks it (with the row stride) into a copy
    flat, stride = _flat_rows(pixels, 3)
    return Image.frombuffer("RGB", (w, h), flat, "raw", "RGB", stride, 1)


def encode_tile(pixels: np.ndarray, alpha: np.ndarray, options: EncodeOptions) -> tuple[bytes, TileFormat]:
    """Encode one tile. ``pixels`` is (h, w, 3) RGB or (h, w) grey uint8, ``alpha`` a (h, w) bool array.

    Pixels under a transparent alpha must already be zeroed by the caller.
    """
    opaque = bool(alpha.all())
    if options.tile_format == "jpeg" or (options.tile_format == "mixed" and opaque):
        return encode_jpeg(pixels, options.jpeg_quality), "jpeg"
    if opaque:
        image = _image(pixels)
    else:
        a = alpha.view(np.uint8) * np.uint8(255)
        # (h, w, 4) -> RGBA, (h, w, 2) -> LA
        image = Image.fromarray(np.ascontiguousarray(np.dstack([pixels, a])))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=options.png_compress_level)
    return buf.getvalue(), "png"


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """JPEG of an (h, w, 3) RGB or (h, w) grey tile: baseline, 4:2:0, optimised Huffman tables.

    libjpeg-turbo through imagecodecs, which encodes without the GIL. Pillow wraps the same library with
    the same defaults (its bytes are identical, tested) but holds the GIL while it encodes a JPEG, so its
    encode threads ran one at a time (measured: two threads encoded at 0.97x the rate of one, against 1.9x
    here; Pillow's PNG encoder does release the GIL). Strided tile views of a block are read in place.
    """
    rgbx = _rgbx(pixels)
    if rgbx is not None:  # RGBX rows straight into libjpeg-turbo (same bytes as packed RGB, tested)
        return bytes(jpeg8_encode(rgbx, level=quality, optimize=True, subsampling=(2, 2),
                                  colorspace=JPEG8.CS.EXT_RGBX, outcolorspace=JPEG8.CS.YCbCr))
    packed = pixels.strides[-1] == 1 and (pixels.ndim == 2 or pixels.strides[1] == pixels.shape[2])
    if not packed:  # imagecodecs reads rows at any stride, but pixels must be packed within a row
        pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 3:
        return bytes(jpeg8_encode(pixels, level=quality, optimize=True, subsampling=(2, 2)))
    return bytes(jpeg8_encode(pixels, level=quality, optimize=True))


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
    placed = _aligned_window(src, dst_transform, width, height)
    if placed is None:
        return None
    col, row, c0, r0, c1, r1 = placed
    if c0 >= c1 or r0 >= r1:
        return np.zeros((len(indexes), height, width), src.dtypes[indexes[0] - 1]), np.zeros((height, width), bool)
    window = Window(c0, r0, c1 - c0, r1 - r0)
    alpha_band = _uint8_alpha_band(src)
    if alpha_band is not None:
        block = src.read([*indexes, alpha_band], window=window)
        part, part_alpha = block[:-1], block[-1] > 0
    else:
        part, part_alpha = src.read(indexes, window=window), src.dataset_mask(window=window) > 0
    if (c1 - c0, r1 - r0) == (width, height):
        return part, part_alpha  # the usual case: no copy into a padded canvas
    data = np.zeros((len(indexes), height, width), part.dtype)
    alpha = np.zeros((height, width), bool)
    ys, xs = slice(r0 - row, r1 - row), slice(c0 - col, c1 - col)
    data[:, ys, xs], alpha[ys, xs] = part, part_alpha
    return data, alpha


def _uint8_alpha_band(src: rasterio.io.DatasetReader) -> int | None:
    """The first alpha band (1-based) when it is uint8 (read with the colour bands as the mask), else ``None``
    (the mask is GDAL's dataset mask)."""
    alpha_band = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
    return alpha_band[0] if alpha_band and src.dtypes[alpha_band[0] - 1] == "uint8" else None


def _aligned_window(
    src: rasterio.io.DatasetReader, dst_transform: Any, width: int, height: int
) -> tuple[int, int, int, int, int, int] | None:
    """Where the output block lies in ``src`` when ``src`` has the output grid's pixel size and lattice:
    ``(col, row)`` of its top-left pixel and the part inside the raster ``(c0, r0, c1, r1)`` (empty when
    ``c0 >= c1 or r0 >= r1``); ``None`` when a warp is needed."""
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
    return col, row, c0, r0, c1, r1


def _read_blocks(
    blocks: TiffBlocks, placed: tuple[int, int, int, int, int, int], width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """The aligned read of :func:`_read_aligned`, from the file's blocks (:mod:`tiling.tiff_blocks`): RGBX
    pixels (the RGBA read itself; transparent pixels are zeroed by the caller) and the alpha band > 0."""
    col, row, c0, r0, c1, r1 = placed
    if c0 >= c1 or r0 >= r1:
        return np.zeros((height, width, 4), np.uint8)[..., :3], np.zeros((height, width), bool)
    if (c1 - c0, r1 - r0) == (width, height):  # the usual case: no padded canvas
        rgba = blocks.read(c0, r0, c1, r1)
    else:
        rgba = np.zeros((height, width, 4), np.uint8)
        rgba[r0 - row : r1 - row, c0 - col : c1 - col] = blocks.read(c0, r0, c1, r1)
    if blocks.samples == 4:
        alpha = rgba[..., 3] > 0
    else:
        alpha = np.zeros((height, width), bool)
        alpha[r0 - row : r1 - row, c0 - col : c1 - col] = True
    return rgba[..., :3], alpha


def _read_aligned_rgb(
    src: rasterio.io.DatasetReader, indexes: list[int], placed: tuple[int, int, int, int, int, int], width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_aligned` of 3 uint8 bands, by GDAL, straight into a packed (h, w, 3) RGB block.

    Read in strips of about ``STRIP_ROWS`` rows: GDAL hands bands out band-sequential, and a whole block's
    worth of that (16 MB for 2048² RGBA) is alive next to the interleaved block. Strips of one source block
    row (128 rows in a VRT) cost 3.5x the CPU of one read through a VRT; 1024-row strips about the same.
    Packed RGB, not RGBX: on the large benchmark job (read by GDAL through a VRT) RGBX blocks took the flow
    processes from ~490 to 506-510 MB summed PSS, over the 500 MB budget, for a few % of CPU."""
    col, row, c0, r0, c1, r1 = placed
    whole = (c1 - c0, r1 - r0) == (width, height)
    pixels = np.empty((height, width, 3), np.uint8) if whole else np.zeros((height, width, 3), np.uint8)
    alpha = np.zeros((height, width), bool)
    if c0 >= c1 or r0 >= r1:
        return pixels, alpha
    alpha_band = _uint8_alpha_band(src)
    with_alpha = alpha_band is not None
    bands = [*indexes, alpha_band] if alpha_band is not None else indexes
    strips = -(-(r1 - r0) // STRIP_ROWS)
    rows = -(-(r1 - r0) // strips)
    xs = slice(c0 - col, c1 - col)
    for y in range(r0, r1, rows):
        y1 = min(r1, y + rows)
        window = Window(c0, y, c1 - c0, y1 - y)
        strip = src.read(bands, window=window)
        ys = slice(y - row, y1 - row)
        for band in range(3):
            pixels[ys, xs, band] = strip[band]
        if with_alpha:
            np.greater(strip[3], 0, out=alpha[ys, xs])
        else:
            np.greater(src.dataset_mask(window=window), 0, out=alpha[ys, xs])
    return pixels, alpha


@contextlib.contextmanager
def _opened(source: str, datasets: dict[int | None, Any] | None, level: int | None) -> Iterator[Any]:
    """``source`` opened at overview ``level`` (``None``: full resolution), from/into ``datasets`` if given."""
    kwargs = {} if level is None else {"overview_level": level}
    if datasets is None:
        with rasterio.open(source, **kwargs) as ds:
            yield ds
        return
    if level not in datasets:
        datasets[level] = rasterio.open(source, **kwargs)
    yield datasets[level]


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
    datasets: dict[int | None, Any] | None = None,
) -> Metatile | None:
    """Read the whole batch in one go; ``None`` if the batch does not intersect the raster.

    ``datasets``: open datasets to reuse, by overview level (filled here; the caller closes them). Reads of
    neighbouring batches through the same dataset find the source blocks they share in GDAL's block cache
    instead of decoding them again (closing a dataset drops its cached blocks).
    """
    width, height = batch.ncols * TILE_SIZE, batch.nrows * TILE_SIZE
    bounds = batch.bounds
    out_res = resolution_for_zoom(batch.zoom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _opened(source, datasets, None) as full:
            src_bounds = transform_bounds(full.crs, GRID_CRS, *full.bounds, densify_pts=21)
            if not (
                src_bounds[0] < bounds[2]
                and bounds[0] < src_bounds[2]
                and src_bounds[1] < bounds[3]
                and bounds[1] < src_bounds[3]
            ):
                return None
            plan = _plan_source(full, out_res)
            indexes = _non_alpha_indexes(full)
            colormap = None
            if len(indexes) <= 2:
                indexes = indexes[:1]
                try:
                    colormap = full.colormap(indexes[0])
                except ValueError:
                    colormap = None
            else:
                indexes = indexes[:3]
        dst_transform = from_bounds(*bounds, width, height)
        vrt_options = {
            "transform": dst_transform,
            "width": width,
            "height": height,
            # dst pixels per src pixel, pinned so the kernel does not depend on GDAL's warp chunking
            "XSCALE": repr(min(1.0, plan.src_res[0] / out_res)),
            "YSCALE": repr(min(1.0, plan.src_res[1] / out_res)),
        }
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX), _opened(source, datasets, plan.level) as src:
            rgb8 = len(indexes) == 3 and all(src.dtypes[i - 1] == "uint8" for i in indexes)
            if rgb8 and rescale is None:
                placed = _aligned_window(src, dst_transform, width, height)
                if placed is not None:
                    blocks = blocks_for(src, indexes) if plan.level is None else None
                    if blocks is not None:
                        return Metatile(*_read_blocks(blocks, placed, width, height), dst_transform)
                    return Metatile(*_read_aligned_rgb(src, indexes, placed, width, height), dst_transform)
            direct = _read_aligned(src, indexes, dst_transform, width, height)
            if direct is not None:
                data, alpha = direct
            else:
                Reader, NoOverviewWarning, tms = _warp_reader()
                warnings.simplefilter("ignore", NoOverviewWarning)
                with Reader(source, dataset=src, tms=tms) as reader:
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
        rgba, cmap_alpha = _apply_cmap()(data, colormap)
        data = rgba[:3]
        alpha &= cmap_alpha > 0
    elif data.dtype != np.uint8:
        rng = rescale or _dataset_range(source, _source_mtime(source), tuple(indexes))
        data = _to_uint8(data, rng)
    elif rescale is not None:
        data = _to_uint8(data, rescale)
    return Metatile(_interleave(data), alpha, dst_transform)


_LAZY_IMPORT_LOCK = threading.Lock()


def _warp_reader() -> tuple[Any, type[Warning], Any]:
    """rio-tiler's ``Reader``, its ``NoOverviewWarning`` and the grid's TileMatrixSet, imported on first use:
    rio-tiler and morecantile take ~0.45 s to import and reads aligned on the grid never need them.

    Under a lock: render threads run in parallel, and two threads importing a package with import cycles at
    the same moment can get it half initialised (``ImportError: ... partially initialized module``)."""
    with _LAZY_IMPORT_LOCK:
        from rio_tiler.errors import NoOverviewWarning
        from rio_tiler.io import Reader

        from tiling.grid import TMS

        return Reader, NoOverviewWarning, TMS


def _apply_cmap() -> Callable[..., Any]:
    """rio-tiler's ``apply_cmap``, imported on first use (see :func:`_warp_reader`)."""
    with _LAZY_IMPORT_LOCK:
        from rio_tiler.colormap import apply_cmap

        return apply_cmap


def _non_alpha_indexes(src: Any) -> list[int]:
    """The bands that are not alpha (by mask flag or colour interpretation), as rio-tiler's
    ``non_alpha_indexes`` picks them."""
    return [
        b
        for ix, b in enumerate(src.indexes)
        if src.mask_flag_enums[ix] is not MaskFlags.alpha and src.colorinterp[ix] is not ColorInterp.alpha
    ]


def _interleave(data: np.ndarray) -> np.ndarray:
    """(3, H, W) band-sequential → a new (H, W, 3) pixel-interleaved array; (1, H, W) → (H, W).

    One strided assignment per band: ~4x faster than ``np.ascontiguousarray(np.moveaxis(...))``, whose
    generic transposing copy walks the destination in an order no cache likes.
    """
    if data.shape[0] != 3:
        return np.ascontiguousarray(data[0])
    pixels = np.empty(data.shape[1:] + (3,), data.dtype)
    for band in range(3):
        pixels[..., band] = data[band]
    return pixels


# ------------------------------------------------------------------------------------------- footprint


def _footprint_geometry(footprint: dict[str, Any] | Any) -> Any:
    """The footprint as a prepared shapely geometry (parsed once per render, not once per read)."""
    geom = shapely.geometry.shape(footprint) if isinstance(footprint, dict) else footprint
    shapely.prepare(geom)
    return geom


def _footprint_relation(footprint: dict[str, Any] | Any, bounds: Sequence[float]) -> tuple[str, Any]:
    geom = _footprint_geometry(footprint) if isinstance(footprint, dict) else footprint
    box = shapely.box(*bounds)
    if not geom.intersects(box):
        return "outside", geom
    if geom.contains(box):
        return "inside", geom
    return "partial", geom


def _footprint_mask(geom: Any, transform: Any, shape: tuple[int, int]) -> np.ndarray:
    """True inside the footprint (pixel centres). Only the part of the footprint over the block is
    rasterised (every pixel centre lies inside the block, so clipping changes nothing)."""
    h, w = shape
    minx, maxy = transform * (0, 0)
    maxx, miny = transform * (w, h)
    part = shapely.clip_by_rect(geom, min(minx, maxx), min(miny, maxy), max(minx, maxx), max(miny, maxy))
    if part.is_empty:
        return np.zeros(shape, bool)
    return rasterio.features.geometry_mask(
        [shapely.geometry.mapping(part)], out_shape=shape, transform=transform, invert=True
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
    pool: cf.Executor | None = None,
    emit: Callable[[EncodedTile], None] | None = None,
) -> list[EncodedTile]:
    """Render every non-empty tile of ``batch`` from ``source`` (see the module docstring).

    ``levels``: also build that many coarser zooms from the batch (all of their tiles whose children lie
    in the batch; see :class:`tiling.grid.WorkUnit`). ``clip_bounds``: pixels outside these bounds
    (EPSG:4326) are transparent, like those outside ``footprint``. ``pool``: encode the tiles there (e.g.
    :func:`encode_pool`) while this thread reads and downsamples; the tiles and their order are the same.
    ``emit``: called with each tile as soon as it is encoded, in order (then the returned list is empty):
    encoded tiles need not be held until the whole unit is done.
    """
    options = EncodeOptions(tile_format, jpeg_quality, png_compress_level)
    _tune_malloc()
    tiles: list[EncodedTile] = []
    encoder = _Encoder(options, pool, emit or tiles.append)
    try:
        _render(source, batch, encoder, resampling=resampling, rescale=rescale, footprint=footprint,
                clip_bounds=clip_bounds, levels=levels)
        encoder.finish()
    except BaseException:
        encoder.cancel()
        raise
    return tiles


def _render(
    source: str,
    batch: Batch,
    encoder: _Encoder,
    *,
    resampling: Resampling,
    rescale: tuple[float, float] | None,
    footprint: dict[str, Any] | None,
    clip_bounds: Sequence[float] | None,
    levels: int,
) -> None:
    datasets: dict[int | None, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [ds.close() for ds in datasets.values()])
        geom = None if footprint is None else _footprint_geometry(footprint)
        read = functools.partial(_read_masked, source, resampling=resampling, rescale=rescale,
                                 footprint=geom, clip_bounds=clip_bounds, datasets=datasets)
        _render_unit(read, encoder, batch, levels)


def _render_unit(
    read: Callable[[Batch], tuple[np.ndarray, np.ndarray] | None], encoder: _Encoder, batch: Batch, levels: int
) -> None:
    if levels == 0 or max(batch.ncols, batch.nrows) <= CHUNK_TILES:
        block = read(batch)
        if block is None:
            return
        pixels, alpha = block
        encoder.block(batch.zoom, batch.min_col, batch.min_row, pixels, alpha)
        zoom, col0, row0 = batch.zoom, batch.min_col, batch.min_row
        for _ in range(levels):
            pixels, alpha, col0, row0 = _pad_even(pixels, alpha, col0, row0)
            pixels, alpha = downsample2(pixels, alpha)
            zoom, col0, row0 = zoom - 1, col0 // 2, row0 // 2
            encoder.block(zoom, col0, row0, pixels, alpha)
        return
    # memory stays flat whatever the unit size: the unit is walked as a quadtree of squares of 2**levels
    # tiles (aligned in global indices: each square owns every tile of its pyramid); the finest zoom is read
    # in chunks of at most CHUNK_TILES², and each square hands only its top tile up to its parent
    side = 1 << levels
    for row in range(batch.min_row // side * side, batch.max_row + 1, side):
        for col in range(batch.min_col // side * side, batch.max_col + 1, side):
            _render_square(read, encoder, batch, col, row, side)


def _render_square(
    read: Callable[[Batch], tuple[np.ndarray, np.ndarray] | None],
    encoder: _Encoder,
    batch: Batch,
    col0: int,
    row0: int,
    side: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Encode zooms ``batch.zoom`` .. ``batch.zoom - log2(side)`` of the aligned square of ``side`` tiles at
    ``(col0, row0)`` (clipped to ``batch``); return its single tile of the coarsest of those zooms, ``None``
    when it is empty."""
    c0, r0 = max(col0, batch.min_col), max(row0, batch.min_row)
    c1, r1 = min(col0 + side - 1, batch.max_col), min(row0 + side - 1, batch.max_row)
    if c0 > c1 or r0 > r1:
        return None
    zoom = batch.zoom
    if side <= CHUNK_TILES:
        block = read(Batch(zoom, c0, r0, c1, r1))
        if block is None:
            return None
        pixels, alpha = block
        encoder.block(zoom, c0, r0, pixels, alpha)
        while side > 1:
            pixels, alpha, c0, r0 = _pad_even(pixels, alpha, c0, r0)
            pixels, alpha = downsample2(pixels, alpha)
            zoom, c0, r0, side = zoom - 1, c0 // 2, r0 // 2, side // 2
            encoder.block(zoom, c0, r0, pixels, alpha)
        return pixels, alpha
    half = side // 2
    canvas: np.ndarray | None = None
    canvas_alpha = np.zeros((2 * TILE_SIZE, 2 * TILE_SIZE), bool)
    for dy in (0, 1):
        for dx in (0, 1):
            top = _render_square(read, encoder, batch, col0 + dx * half, row0 + dy * half, half)
            if top is None:
                continue
            ys, xs = slice(dy * TILE_SIZE, (dy + 1) * TILE_SIZE), slice(dx * TILE_SIZE, (dx + 1) * TILE_SIZE)
            if canvas is None:
                canvas = _zeros_like_block(canvas_alpha.shape, top[0])
            canvas[ys, xs], canvas_alpha[ys, xs] = top
    if canvas is None:
        return None
    pixels, alpha = downsample2(canvas, canvas_alpha)
    levels = side.bit_length() - 1
    encoder.block(zoom - levels, col0 >> levels, row0 >> levels, pixels, alpha)
    return pixels, alpha


def _read_masked(
    source: str,
    batch: Batch,
    *,
    resampling: Resampling,
    rescale: tuple[float, float] | None,
    footprint: dict[str, Any] | Any | None,
    clip_bounds: Sequence[float] | None,
    datasets: dict[int | None, Any] | None = None,
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
    meta = read_metatile(source, batch, resampling=resampling, rescale=rescale, datasets=datasets)
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
        _zero_transparent(pixels, alpha)
    return pixels, alpha


def _zero_transparent(pixels: np.ndarray, alpha: np.ndarray) -> None:
    """Zero ``pixels`` (in place) wherever ``alpha`` is False, tile by tile: a block with some transparency
    is mostly made of fully opaque tiles (left alone) and fully transparent ones (cleared); only the tiles
    on an alpha edge need the per-pixel multiply (measured ~2.5x faster than one multiply over the block).

    An RGBX-backed block is handled as one 32-bit word per pixel (25x faster than broadcasting the alpha
    over 3 bytes); a multiply by the alpha's bytes (0/1) is ~3x faster than a boolean-mask assignment."""
    rgbx = _rgbx(pixels, writeable=True)
    target = rgbx.view(np.uint32)[..., 0] if rgbx is not None else pixels
    for y0 in range(0, alpha.shape[0], TILE_SIZE):
        for x0 in range(0, alpha.shape[1], TILE_SIZE):
            tile_alpha = alpha[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE]
            if tile_alpha.all():
                continue
            tile = target[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE]
            if not tile_alpha.any():
                tile[...] = 0
                continue
            a = tile_alpha.view(np.uint8)
            np.multiply(tile, a[..., None] if tile.ndim == 3 else a, out=tile, casting="unsafe")


class _Encoder:
    """Encodes the tiles of blocks, in order, inline or on a pool (at most ``MAX_PENDING_ENCODES`` queued)."""

    #: the codec call (a benchmark swaps it out to time all the work that is not encoding)
    encode = staticmethod(encode_tile)

    def __init__(self, options: EncodeOptions, pool: cf.Executor | None, emit: Callable[[EncodedTile], None]):
        self.options, self.pool, self.emit = options, pool, emit
        self.pending: collections.deque[tuple[int, int, int, cf.Future[tuple[bytes, TileFormat]]]] = (
            collections.deque()
        )

    def block(self, zoom: int, col0: int, row0: int, pixels: np.ndarray, alpha: np.ndarray) -> None:
        """Encode the non-empty 256×256 tiles of a block whose top-left tile is ``(col0, row0)``."""
        for y0 in range(0, alpha.shape[0], TILE_SIZE):
            for x0 in range(0, alpha.shape[1], TILE_SIZE):
                tile_alpha = alpha[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE]
                if not tile_alpha.any():
                    continue
                tile_pixels = pixels[y0 : y0 + TILE_SIZE, x0 : x0 + TILE_SIZE]
                col, row = col0 + x0 // TILE_SIZE, row0 + y0 // TILE_SIZE
                if self.pool is None:
                    self.emit(EncodedTile(zoom, col, row, *self.encode(tile_pixels, tile_alpha, self.options)))
                    continue
                while len(self.pending) >= MAX_PENDING_ENCODES:
                    self._pop()
                future = self.pool.submit(self.encode, tile_pixels, tile_alpha, self.options)
                self.pending.append((zoom, col, row, future))

    def _pop(self) -> None:
        zoom, col, row, future = self.pending.popleft()
        self.emit(EncodedTile(zoom, col, row, *future.result()))

    def finish(self) -> None:
        while self.pending:
            self._pop()

    def cancel(self) -> None:
        for *_, future in self.pending:
            future.cancel()
        self.pending.clear()


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
    new_pixels = _zeros_like_block(shape, pixels)
    ys, xs = slice(top * t, top * t + alpha.shape[0]), slice(left * t, left * t + alpha.shape[1])
    new_alpha[ys, xs] = alpha
    new_pixels[ys, xs] = pixels
    return new_pixels, new_alpha, col0 - left, row0 - top


def _zeros_like_block(shape: tuple[int, int], like: np.ndarray) -> np.ndarray:
    """A zeroed (h, w[, 3]) block in the layout of ``like`` (RGBX-backed RGB stays RGBX-backed)."""
    if _rgbx(like) is not None:
        return np.zeros(shape + (4,), np.uint8)[..., :3]
    return np.zeros(shape + like.shape[2:], like.dtype)


def downsample2(pixels: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Halve a block: each output pixel is the rounded mean of its opaque 2×2 children (transparent
    children are ignored); it is opaque when any child is. ``pixels`` under transparent alpha must be 0.
    """
    h, w = alpha.shape
    if h % 2 or w % 2:
        raise ValueError(f"block size must be even, got {w}x{h}")
    if alpha.all():
        return _reduce2(pixels), np.ones((h // 2, w // 2), bool)
    # opaque children per output pixel, by Pillow too: 0/64 per child → (64·n + 2) >> 2 = 16·n
    count = np.asarray(Image.fromarray(alpha.view(np.uint8) * np.uint8(64)).reduce(2)) >> 4
    # only the pixels on an alpha edge (1..3 opaque children) need the mean over fewer than 4 children
    edge = (count > 0) & (count < 4)
    ys, xs = np.nonzero(edge)
    if len(ys) > edge.size // 16:  # a ragged mask (e.g. a nodata speckle): one vectorised pass is cheaper
        return _downsample2_numpy(pixels, alpha)
    out = _reduce2(pixels, writable=bool(len(ys)))
    if len(ys):
        # transparent children are 0, so the sum of all 4 is the sum of the opaque ones
        n = count[ys, xs].astype(np.uint16)
        acc = pixels[2 * ys, 2 * xs].astype(np.uint16)
        acc += pixels[2 * ys + 1, 2 * xs]
        acc += pixels[2 * ys, 2 * xs + 1]
        acc += pixels[2 * ys + 1, 2 * xs + 1]
        if acc.ndim == 2:
            n = n[:, None]
        out[ys, xs] = (acc + (n >> 1)) // n
    return out, count > 0


def _reduce2(pixels: np.ndarray, writable: bool = False) -> np.ndarray:
    """2×2 means of every pixel, by Pillow's box reduction: it rounds exactly as (a + b + c + d + 2) >> 2 and
    runs in C without the GIL (~3x faster than numpy). Right wherever all 4 children are opaque, and where
    none is (all 0).

    An RGBX-backed block (:func:`rgbx_block`) is mapped by Pillow in place as an "RGBX" image (the padding
    byte is averaged too, and ignored) and the result is RGBX-backed again; other blocks are copied into a
    Pillow image first. The result is read-only unless ``writable``."""
    rgbx = _rgbx(pixels)
    if rgbx is not None:
        h, w = pixels.shape[:2]
        flat, stride = _flat_rows(rgbx, 4)
        if stride == 4 * w:  # whole rows: mapped in place
            image = Image.frombuffer("RGBX", (w, h), flat, "raw", "RGBX", 0, 1)
        else:  # a window of a wider block: Pillow's map needs every row's full stride, so unpack (a copy)
            image = Image.frombytes("RGBX", (w, h), flat, "raw", "RGBX", stride, 1)
        reduced = np.asarray(image.reduce(2))
        if writable:
            reduced = reduced.copy()
        return reduced[..., :3]
    reduced = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).reduce(2))
    return reduced.copy() if writable else reduced


def _downsample2_numpy(pixels: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    acc = pixels[0::2, 0::2].astype(np.uint16)
    acc += pixels[1::2, 0::2]
    acc += pixels[0::2, 1::2]
    acc += pixels[1::2, 1::2]
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
    if _rgbx(pixels) is not None:  # keep the block's layout for the next level
        out = rgbx_block(*acc.shape[:2])
        out[...] = acc
        return out, opaque
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
