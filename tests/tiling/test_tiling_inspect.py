from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import shape

from tiling.grid import resolution_for_zoom
from tiling.inspect import RasterError, inspect_raster

from .conftest import SYNTH_ZOOM


def test_inspect_rgb_byte(rgb_byte: str) -> None:
    info = inspect_raster(rgb_byte)
    assert info.bands == 3
    assert info.dtype == "uint8"
    assert info.crs == "EPSG:32618"
    assert info.nodata == 0
    # 300 m pixels at ~24.5°N are ~0.00285°
    assert 0.0025 < info.max_resolution < 0.0032
    assert info.max_zoom == 7
    assert resolution_for_zoom(info.max_zoom) >= info.max_resolution
    minx, miny, maxx, maxy = info.bounds_4326
    assert -79.1 < minx < -78.8 and -76.7 < maxx < -76.4 and 23.4 < miny < 23.7 and 25.4 < maxy < 25.7
    geom = shape(info.footprint)
    assert info.footprint["type"] in ("Polygon", "MultiPolygon")
    assert geom.is_valid
    bbox = shapely.box(*info.bounds_4326)
    # the valid data is a rotated scene: clearly smaller than its bbox, but most of the valid pixels' area
    assert 0.5 < geom.area / bbox.area < 0.8
    assert bbox.buffer(0.05).contains(geom)
    json.dumps(info.to_dict())


def test_inspect_synthetic_4326(
    synth_cog: str, synth_bounds: tuple[float, ...], synth_valid: np.ndarray
) -> None:
    info = inspect_raster(synth_cog)
    assert info.crs == "EPSG:4326"
    assert math.isclose(info.max_resolution, resolution_for_zoom(SYNTH_ZOOM))
    assert info.max_zoom == SYNTH_ZOOM
    assert info.bounds_4326 == pytest.approx(synth_bounds)
    geom = shape(info.footprint)
    valid_area = synth_valid.sum() * resolution_for_zoom(SYNTH_ZOOM) ** 2
    assert geom.area == pytest.approx(valid_area, rel=0.03)
    # the notch (east of the centre, on the middle row) is outside the footprint
    cx = (synth_bounds[0] + synth_bounds[2]) / 2
    cy = (synth_bounds[1] + synth_bounds[3]) / 2
    assert not geom.contains(shapely.Point(cx + (synth_bounds[2] - cx) * 0.5, cy))
    assert geom.contains(shapely.Point(cx - (cx - synth_bounds[0]) * 0.5, cy))


def test_inspect_decimated_large_mask(tmp_path: Path) -> None:
    # a 3000 px wide raster is polygonised on a decimated mask but keeps its outline
    path = tmp_path / "large.tif"
    data = np.zeros((1, 1500, 3000), dtype=np.uint8)
    data[0, 100:1400, 200:2800] = 7
    profile = dict(
        driver="GTiff",
        width=3000,
        height=1500,
        count=1,
        dtype="uint8",
        nodata=0,
        crs="EPSG:4326",
        transform=rasterio.transform.from_origin(0, 1.5, 0.001, 0.001),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    info = inspect_raster(str(path))
    geom = shape(info.footprint)
    assert geom.area == pytest.approx(2.6 * 1.3, rel=0.02)
    assert geom.contains(shapely.box(0.2, 0.1, 2.8, 1.4).buffer(-0.001))


def test_inspect_unreadable(tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(RasterError, match="cannot open"):
        inspect_raster(str(text))
    with pytest.raises(RasterError):
        inspect_raster(str(tmp_path / "missing.tif"))


def test_inspect_not_georeferenced(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
            dst.write(np.ones((1, 8, 8), dtype=np.uint8))
    with pytest.raises(RasterError, match="not georeferenced"):
        inspect_raster(str(path))


def test_inspect_all_nodata(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    profile = dict(
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint8",
        nodata=0,
        crs="EPSG:4326",
        transform=rasterio.transform.from_origin(0, 1, 0.1, 0.1),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, 8, 8), dtype=np.uint8))
    with pytest.raises(RasterError, match="no valid"):
        inspect_raster(str(path))
