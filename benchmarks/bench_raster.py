"""The benchmark raster: a synthetic but realistic RGBA COG in EPSG:4326, written with rasterio.

Smooth terrain-like colour fields, sharp edges (a road grid, a river), a fine texture (so PNG cannot
cheat), and a nodata region (alpha 0 outside a wobbly ellipse, plus a lake-shaped hole). The pixel size
is exactly the one of a WorldCRS84Quad zoom level and the origin sits on that zoom's pixel lattice (but
not on a tile corner), so GDAL and geoexport pick the same maximum zoom. Written strip by strip (memory
stays small for the large raster), then copied to a COG with AVERAGE overviews.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from rasterio.windows import Window

STRIP = 512


def zoom_res(zoom: int) -> float:
    return 180.0 / 256 / 2**zoom


def raster_origin(zoom: int, west: float = 34.6, north: float = 32.2) -> tuple[float, float]:
    """``(west, north)`` near the given place, on the zoom's pixel lattice, 37/21 px off a tile corner."""
    res = zoom_res(zoom)
    col = math.floor((west + 180.0) / res / 256) * 256 + 37
    row = math.floor((90.0 - north) / res / 256) * 256 + 21
    return -180.0 + col * res, 90.0 - row * res


def _pixels(x0: int, y0: int, w: int, h: int, width: int, height: int, noise: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    u, v = xx / width, yy / height
    # smooth fields at two scales (fixed seed, so every strip agrees)
    rng = np.random.default_rng(7)
    field = np.zeros((h, w), np.float32)
    for _ in range(6):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fx * u + fy * v) + ph)
    detail = np.zeros((h, w), np.float32)
    for _ in range(4):
        fx, fy, ph = rng.uniform(20, 60), rng.uniform(20, 60), rng.uniform(0, 2 * np.pi)
        detail += np.sin(2 * np.pi * (fx * u + fy * v) + ph)
    field = (field + 6.0) / 12.0 + 0.04 * detail
    roads = ((xx % 700) < 7) | ((yy % 900) < 6) | (np.abs((xx + 0.6 * yy) % 2300 - 1150) < 4)
    river = np.abs(v - 0.5 - 0.15 * np.sin(6 * u)) < 0.006
    r = 60 + 150 * field
    g = 90 + 120 * (1 - field) * (0.6 + 0.4 * v)
    b = 40 + 90 * field * u
    r[roads], g[roads], b[roads] = 235, 230, 220
    r[river], g[river], b[river] = 40, 90, 200
    # texture: a fixed noise patch, tiled (cheap for huge rasters, still incompressible locally)
    n = noise[np.ix_(np.arange(y0, y0 + h) % noise.shape[0], np.arange(x0, x0 + w) % noise.shape[1])]
    rgb = [np.clip(c + n, 1, 255).astype(np.uint8) for c in (r, g, b)]
    # nodata: outside a wobbly ellipse, and inside a lake
    ang = np.arctan2(v - 0.5, u - 0.5)
    radius = 0.47 + 0.04 * np.sin(5 * ang) + 0.02 * np.cos(3 * ang + 1)
    inside = np.hypot(u - 0.5, (v - 0.5) * 1.1) < radius
    lake = np.hypot((u - 0.3) * 1.3, v - 0.35) < 0.06 + 0.01 * np.sin(9 * np.arctan2(v - 0.35, u - 0.3))
    alpha = np.where(inside & ~lake, 255, 0).astype(np.uint8)
    out = np.stack(rgb + [alpha])
    out[:3, alpha == 0] = 0
    return out


def write_bench_cog(path: Path, *, width: int, height: int, zoom: int = 14) -> Path:
    """Write (if missing) the benchmark COG of ``width`` × ``height`` px at ``zoom``; return its path."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    west, north = raster_origin(zoom)
    res = zoom_res(zoom)
    noise = np.random.default_rng(11).normal(0, 3.5, (1031, 1021)).astype(np.float32)
    plain = path.with_name(path.stem + ".plain.tif")
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint8",
        "crs": "EPSG:4326",
        "transform": from_origin(west, north, res, res),
        "photometric": "RGB",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "zstd",
        "zstd_level": 1,
        "bigtiff": "IF_SAFER",
    }
    with rasterio.open(plain, "w", **profile) as dst:
        dst.colorinterp = [
            rasterio.enums.ColorInterp.red,
            rasterio.enums.ColorInterp.green,
            rasterio.enums.ColorInterp.blue,
            rasterio.enums.ColorInterp.alpha,
        ]
        for y0 in range(0, height, STRIP):
            h = min(STRIP, height - y0)
            dst.write(_pixels(0, y0, width, h, width, height, noise), window=Window(0, y0, width, h))
    tmp = path.with_name(path.stem + ".tmp.tif")
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(
            plain,
            tmp,
            driver="COG",
            COMPRESS="DEFLATE",
            PREDICTOR="2",
            BLOCKSIZE="512",
            OVERVIEW_RESAMPLING="AVERAGE",
            BIGTIFF="IF_SAFER",
            NUM_THREADS="ALL_CPUS",
        )
    plain.unlink()
    tmp.replace(path)
    return path
