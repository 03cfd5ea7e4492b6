"""The benchmark raster: a synthetic but realistic RGBA COG in EPSG:4326, written with rasterio.

Smooth terrain-like colour fields, sharp edges (a road grid, a river), a fine texture (so PNG cannot
cheat), and a nodata region (alpha 0 outside a wobbly ellipse, plus a lake-shaped hole). The pixel size
is exactly the one of a WorldCRS84Quad zoom level and the origin sits on that zoom's pixel lattice (but
not on a tile corner), so GDAL and geoexport pick the same maximum zoom. Written strip by strip (memory
stays small for the large raster), then copied to a COG with AVERAGE overviews.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from xml.sax.saxutils import escape

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


def write_mosaic_vrt(path: Path, tile: Path, nx: int, ny: int) -> Path:
    """Write (if missing) a GDAL VRT that repeats the COG ``tile`` ``nx`` × ``ny`` times side by side.

    Copies sit at exact pixel offsets (``i * width``, ``j * height``) from the tile's own origin, with the
    tile's pixel size: the mosaic stays on the same zoom lattice, is read as real compressed data, and takes
    no time or disk to "write" (XML only). Band 4 is the alpha band. GDAL only exposes implicit overviews for
    single-source VRTs, so each overview level of the tile gets its own mosaic VRT
    (``<name>.ovr<factor>.vrt``, sources opened with ``OVERVIEW_LEVEL``), declared as the band's
    ``<Overview>``: low zooms read overviews, as they do from the COG.
    """
    if path.exists():
        return path
    with rasterio.open(tile) as src:
        width, height, t = src.width, src.height, src.transform
        wkt = src.crs.to_wkt()
        colors = [ci.name.capitalize() for ci in src.colorinterp]
        block_w, block_h = src.block_shapes[0][1], src.block_shapes[0][0]
        types = [_GDAL_TYPES[d] for d in src.dtypes]
        factors = src.overviews(1)
    rel = escape(os.path.relpath(tile, path.parent))
    ovr_files = []
    for level, factor in enumerate(factors):
        w, h = math.ceil(width / factor), math.ceil(height / factor)
        ovr = path.with_name(f"{path.stem}.ovr{factor}.vrt")
        transform = t * t.scale(width / w, height / h)
        _write_vrt(ovr, rel, wkt, transform, colors, types, w, h, nx, ny, block_w, block_h, level, [])
        ovr_files.append(ovr.name)
    _write_vrt(path, rel, wkt, t, colors, types, width, height, nx, ny, block_w, block_h, None, ovr_files)
    return path


def _write_vrt(path: Path, rel: str, wkt: str, t: object, colors: list[str], types: list[str], width: int,
               height: int, nx: int, ny: int, block_w: int, block_h: int, level: int | None,
               overviews: list[str]) -> None:
    gt = f"{t.c!r}, {t.a!r}, 0.0, {t.f!r}, 0.0, {t.e!r}"  # type: ignore[attr-defined]
    lines = [f'<VRTDataset rasterXSize="{width * nx}" rasterYSize="{height * ny}">',
             f'  <SRS dataAxisToSRSAxisMapping="2,1">{escape(wkt)}</SRS>', f"  <GeoTransform>{gt}</GeoTransform>"]
    opts = "" if level is None else f'<OpenOptions><OOI key="OVERVIEW_LEVEL">{level}</OOI></OpenOptions>'
    for band, (color, dtype) in enumerate(zip(colors, types, strict=True), start=1):
        lines.append(f'  <VRTRasterBand dataType="{dtype}" band="{band}">')
        lines.append(f"    <ColorInterp>{color}</ColorInterp>")
        for j in range(ny):
            for i in range(nx):
                lines += [
                    "    <SimpleSource>",
                    f'      <SourceFilename relativeToVRT="1">{rel}</SourceFilename>{opts}',
                    f"      <SourceBand>{band}</SourceBand>",
                    f'      <SourceProperties RasterXSize="{width}" RasterYSize="{height}" '
                    f'DataType="{dtype}" BlockXSize="{block_w}" BlockYSize="{block_h}"/>',
                    f'      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>',
                    f'      <DstRect xOff="{i * width}" yOff="{j * height}" xSize="{width}" ySize="{height}"/>',
                    "    </SimpleSource>",
                ]
        for name in overviews:
            lines.append(f'    <Overview><SourceFilename relativeToVRT="1">{escape(name)}</SourceFilename>'
                         f"<SourceBand>{band}</SourceBand></Overview>")
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}
