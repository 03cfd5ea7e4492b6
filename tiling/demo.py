"""A synthetic but realistic demo raster: smooth terrain-like colours, edges, an irregular valid area.

Written as a Cloud-Optimized GeoTIFF in EPSG:4326 whose pixel size sits exactly on a
zoom level of the WorldCRS84Quad grid, so every tool picks the same finest zoom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin


def write_demo_cog(
    path: Path,
    *,
    west: float = 34.78,
    north: float = 32.00,
    zoom: int = 14,
    width: int = 2048,
    height: int = 1536,
    bands: int = 3,
    seed: int = 7,
) -> Path:
    """Write the demo COG and return its path. Pixels outside a wobbly ellipse are nodata (0)."""
    res = 180.0 / 256 / 2**zoom
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    rng = np.random.default_rng(seed)

    # smooth fields (a few low-frequency waves) plus sharp edges (a road grid and a river)
    field = np.zeros((height, width), np.float32)
    for _ in range(6):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fx * u + fy * v) + ph)
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    roads = ((xx % 256) < 6) | ((yy % 320) < 5)
    river = np.abs(v - 0.5 - 0.15 * np.sin(6 * u)) < 0.012

    r = 60 + 150 * field
    g = 90 + 120 * (1 - field) * (0.6 + 0.4 * v)
    b = 40 + 90 * field * u
    r[roads], g[roads], b[roads] = 235, 230, 220
    r[river], g[river], b[river] = 40, 90, 200
    texture = rng.normal(0, 4, (height, width)).astype(np.float32)
    rgb = [np.clip(c + texture, 1, 255).astype(np.uint8) for c in (r, g, b)]
    data = np.stack((rgb * 2)[:bands])

    # irregular footprint: an ellipse with a wobbly edge
    ang = np.arctan2(v - 0.5, u - 0.5)
    radius = 0.42 + 0.05 * np.sin(5 * ang) + 0.03 * np.cos(3 * ang + 1)
    inside = np.hypot((u - 0.5) * 1.0, (v - 0.5) * 1.2) < radius
    data[:, ~inside] = 0

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG",
        "dtype": "uint8",
        "count": bands,
        "width": width,
        "height": height,
        "crs": "EPSG:4326",
        "transform": from_origin(west, north, res, res),
        "nodata": 0,
        "compress": "deflate",
        "blocksize": 512,
        "overview_resampling": Resampling.average.name,
    }
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
    tmp.replace(path)
    return path
