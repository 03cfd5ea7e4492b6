"""What the catalog needs to know about a raster: EPSG:4326 bounds, valid-data footprint, resolution."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from tiling.grid import MAX_ZOOM, resolution_for_zoom, zoom_for_resolution

WGS84 = CRS.from_epsg(4326)
#: The validity mask is polygonised on a decimated copy whose long side is at most this many pixels.
FOOTPRINT_MAX_PIXELS = 1024


class RasterError(ValueError):
    """The source cannot be opened or used (not a raster, not georeferenced, no valid pixel...)."""


@dataclass
class RasterInfo:
    bounds_4326: tuple[float, float, float, float]
    footprint: dict[str, Any]
    """GeoJSON Polygon/MultiPolygon (EPSG:4326) of the valid-data outline."""
    max_resolution: float
    """Native pixel size in degrees (x resolution of the raster reprojected to EPSG:4326)."""
    max_zoom: int
    """Finest zoom not finer than ``max_resolution``."""
    bands: int
    dtype: str
    crs: str
    nodata: float | None
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation."""
        data = asdict(self)
        data["bounds_4326"] = list(self.bounds_4326)
        return data


def _is_wgs84(crs: CRS) -> bool:
    return crs == WGS84 or crs.to_epsg() == 4326 or crs.to_string().upper() == "OGC:CRS84"


def _native_resolution_deg(src: rasterio.io.DatasetReader) -> float:
    if _is_wgs84(src.crs):
        return abs(src.transform.a)
    transform, _, _ = rasterio.warp.calculate_default_transform(
        src.crs, WGS84, src.width, src.height, *src.bounds
    )
    return abs(transform.a)


def _fill_small_holes(geom: BaseGeometry, min_area: float) -> BaseGeometry:
    def fix(poly: shapely.Polygon) -> shapely.Polygon:
        holes = [ring for ring in poly.interiors if shapely.Polygon(ring).area >= min_area]
        return shapely.Polygon(poly.exterior, holes)

    if isinstance(geom, shapely.Polygon):
        return fix(geom)
    if isinstance(geom, shapely.MultiPolygon):
        return shapely.MultiPolygon([fix(p) for p in geom.geoms])
    return geom


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Keep only the polygonal parts of ``geom`` (as Polygon or MultiPolygon)."""
    if isinstance(geom, shapely.Polygon | shapely.MultiPolygon):
        return geom
    polys: list[shapely.Polygon] = []
    for part in getattr(geom, "geoms", []):
        part = _polygonal(part)
        if isinstance(part, shapely.Polygon):
            polys.append(part)
        elif isinstance(part, shapely.MultiPolygon):
            polys.extend(part.geoms)
    if not polys:
        return shapely.Polygon()
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def compute_footprint(
    src: rasterio.io.DatasetReader, max_pixels: int = FOOTPRINT_MAX_PIXELS
) -> dict[str, Any]:
    """GeoJSON geometry (EPSG:4326) of the valid pixels of ``src`` (union of the band masks).

    The dataset mask (nodata / internal mask / alpha) is read decimated so that its long side is at most
    ``max_pixels`` with average resampling (a decimated cell is valid if its average is > 0, i.e. if
    about any of its pixels is valid, so the outline does not lose data), polygonised, grown by one
    decimated cell (covers the decimation and the simplification error), simplified, its small holes
    (< 4 cells) filled, then reprojected to EPSG:4326.
    """
    factor = max(1, math.ceil(max(src.width, src.height) / max_pixels))
    out_h, out_w = math.ceil(src.height / factor), math.ceil(src.width / factor)
    if factor == 1:
        mask = src.dataset_mask()
    else:
        mask = src.dataset_mask(out_shape=(out_h, out_w), resampling=Resampling.average)
    valid = mask > 0
    if not valid.any():
        raise RasterError(f"{src.name}: the raster has no valid (non-nodata) pixel")
    transform = src.transform * Affine.scale(src.width / out_w, src.height / out_h)
    cell = math.hypot(transform.a, transform.b) if factor > 1 else abs(transform.a)
    cell = max(cell, math.hypot(transform.d, transform.e))
    polys = [
        shape(geom)
        for geom, value in rasterio.features.shapes(valid.astype(np.uint8), mask=valid, transform=transform)
        if value
    ]
    geom = shapely.union_all(polys)
    if factor > 1:
        geom = geom.buffer(cell, join_style="mitre")
    geom = geom.simplify(cell / 2, preserve_topology=True)
    geom = _fill_small_holes(_polygonal(geom), 4 * cell * cell)
    geojson = rasterio.warp.transform_geom(src.crs, WGS84, mapping(geom), precision=-1)
    geom4326 = _polygonal(shapely.make_valid(shape(geojson)))
    if geom4326.is_empty:
        raise RasterError(f"{src.name}: could not compute a footprint")
    return json.loads(shapely.to_geojson(geom4326))


def inspect_raster(source: str) -> RasterInfo:
    """Open ``source`` (a path or GDAL URI) and describe it; raise :class:`RasterError` when unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(source)
    except RasterioError as exc:
        raise RasterError(f"cannot open raster {source}: {exc}") from exc
    try:
        with src:
            if src.crs is None or src.transform.is_identity:
                if src.gcps[0]:
                    raise RasterError(f"{source}: GCP-only rasters are not supported, warp them first")
                raise RasterError(f"{source}: the raster is not georeferenced (no CRS or geotransform)")
            bounds = rasterio.warp.transform_bounds(src.crs, WGS84, *src.bounds, densify_pts=21)
            minx, miny, maxx, maxy = bounds
            bounds_4326 = (max(minx, -180.0), max(miny, -90.0), min(maxx, 180.0), min(maxy, 90.0))
            max_resolution = _native_resolution_deg(src)
            max_zoom = zoom_for_resolution(max(max_resolution, resolution_for_zoom(MAX_ZOOM)))
            return RasterInfo(
                bounds_4326=bounds_4326,
                footprint=compute_footprint(src),
                max_resolution=max_resolution,
                max_zoom=max_zoom,
                bands=src.count,
                dtype=src.dtypes[0],
                crs=src.crs.to_string(),
                nodata=src.nodata,
                width=src.width,
                height=src.height,
            )
    except RasterError:
        raise
    except RasterioError as exc:
        raise RasterError(f"cannot open raster {source}: {exc}") from exc
