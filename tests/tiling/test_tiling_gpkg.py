from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import shapely
from osgeo_utils.samples import validate_gpkg
from rasterio.windows import from_bounds as window_from_bounds
from shapely.geometry import mapping, shape

from tiling.gpkg import APPLICATION_ID, GeoPackageWriter, write_sidecar
from tiling.grid import plan_batches, plan_pyramid, resolution_for_zoom, snap_bbox
from tiling.inspect import inspect_raster
from tiling.pipeline import export_gpkg, partial_path
from tiling.render import EncodedTile, render_batch

from .conftest import SYNTH_ZOOM

warnings.filterwarnings("ignore", message=".*has no Overviews.*")


def _validate(path: Path) -> list:
    return validate_gpkg.check(
        str(path), abort_at_first_error=False, extra_checks=True, warning_as_error=True
    )


def _check_structure(path: Path, max_zoom: int, table: str = "tiles") -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 10201
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "gpkg_spatial_ref_sys",
        "gpkg_contents",
        "gpkg_tile_matrix_set",
        "gpkg_tile_matrix",
        table,
    } <= tables
    srs = {r[0] for r in conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys")}
    assert {-1, 0, 4326} <= srs
    assert conn.execute(
        "SELECT data_type, srs_id FROM gpkg_contents WHERE table_name = ?", (table,)
    ).fetchone() == ("tiles", 4326)
    assert conn.execute(
        "SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set WHERE table_name = ?", (table,)
    ).fetchone() == (4326, -180.0, -90.0, 180.0, 90.0)
    rows = conn.execute(
        "SELECT zoom_level, matrix_width, matrix_height, tile_width, tile_height, pixel_x_size, pixel_y_size"
        " FROM gpkg_tile_matrix WHERE table_name = ? ORDER BY zoom_level",
        (table,),
    ).fetchall()
    assert [r[0] for r in rows] == list(range(max_zoom + 1))
    for z, mw, mh, tw, th, px, py in rows:
        assert (mw, mh, tw, th) == (2 * 2**z, 2**z, 256, 256)
        assert px == py == resolution_for_zoom(z)
    unique = [idx for idx in conn.execute(f"PRAGMA index_list({table})").fetchall() if idx[2] == 1]
    cols = [[c[2] for c in conn.execute(f"PRAGMA index_info({idx[1]})").fetchall()] for idx in unique]
    assert ["zoom_level", "tile_column", "tile_row"] in cols
    return conn


def test_writer_basic(tmp_path: Path, synth_cog: str) -> None:
    info = inspect_raster(synth_cog)
    path = tmp_path / "basic.gpkg"
    bounds = snap_bbox(info.bounds_4326, SYNTH_ZOOM)
    with GeoPackageWriter(
        path,
        identifier="basic",
        description="d",
        tile_bounds=bounds,
        zooms=range(SYNTH_ZOOM + 1),
        metadata={"layer": "synth", "n": 3},
    ) as writer:
        total = 0
        for batch in plan_batches(plan_pyramid(info.bounds_4326, SYNTH_ZOOM)):
            total += writer.write_tiles(render_batch(synth_cog, batch))
        assert writer.write_tiles([]) == 0
        with pytest.raises(ValueError):
            writer.write_tiles([EncodedTile(SYNTH_ZOOM + 1, 0, 0, b"x", "png")])
        writer.add_footprint_layer(info.footprint, {"name": "synth", "zoom": SYNTH_ZOOM, "res": 0.5})
    conn = _check_structure(path, SYNTH_ZOOM)
    assert conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == total > 0
    meta = conn.execute("SELECT mime_type, metadata FROM gpkg_metadata").fetchone()
    assert meta[0] == "application/json" and json.loads(meta[1]) == {"layer": "synth", "n": 3}
    assert conn.execute("SELECT min_x, max_y FROM gpkg_contents WHERE table_name='tiles'").fetchone() == (
        bounds[0],
        bounds[3],
    )
    conn.close()
    assert _validate(path) == []
    with fiona.open(path, layer="footprint") as layer:
        assert layer.crs.to_epsg() == 4326
        features = list(layer)
        assert len(features) == 1
        assert features[0]["properties"]["name"] == "synth"
        assert (
            shape(features[0]["geometry"]).equals_exact(shape(info.footprint), 1e-9)
            or shape(features[0]["geometry"]).symmetric_difference(shape(info.footprint)).area < 1e-12
        )
    with pytest.raises(FileExistsError):
        GeoPackageWriter(path, identifier="again", tile_bounds=bounds, zooms=[0])


def test_export_synthetic_png_exact(tmp_path: Path, synth_cog: str, synth_bounds: tuple[float, ...]) -> None:
    out = tmp_path / "synth.gpkg"
    calls: list[tuple[int, int]] = []
    result = export_gpkg(
        synth_cog,
        synth_bounds,
        SYNTH_ZOOM,
        out,
        tile_format="png",
        batch_tiles=4,
        workers=2,
        progress=lambda d, t: calls.append((d, t)),
        metadata={"dbId": "abc"},
    )
    assert result.path == out and out.exists() and not partial_path(out).exists()
    assert calls[0] == (0, result.tiles_planned) and calls[-1] == (result.tiles_planned, result.tiles_planned)
    assert result.zooms == list(range(SYNTH_ZOOM + 1))
    assert result.bounds == snap_bbox(synth_bounds, SYNTH_ZOOM)
    conn = _check_structure(out, SYNTH_ZOOM)
    assert conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == result.tiles_written
    conn.close()
    assert 0 < result.tiles_written <= result.tiles_planned
    assert _validate(out) == []
    # sidecar
    sidecar = json.loads(Path(str(out) + ".sha256.json").read_text())
    assert sidecar == {
        "file": "synth.gpkg",
        "size": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    assert result.sha256 == sidecar["sha256"] and result.file_size == sidecar["size"]
    # GDAL reads it back: right extent and resolution, same pixels as the source at the max zoom
    with rasterio.open(out) as gpkg, rasterio.open(synth_cog) as src:
        assert gpkg.driver == "GPKG"
        assert tuple(gpkg.bounds) == pytest.approx(result.bounds)
        assert gpkg.res == pytest.approx((resolution_for_zoom(SYNTH_ZOOM),) * 2)
        window = window_from_bounds(*synth_bounds, transform=gpkg.transform).round_offsets().round_lengths()
        got = gpkg.read([1, 2, 3, 4], window=window)
        expected = src.read()
        valid = src.dataset_mask() > 0
        assert got.shape[1:] == expected.shape[1:]
        assert np.array_equal(got[:3][:, valid], expected[:, valid])
        assert (got[3][valid] == 255).all() and (got[3][~valid] == 0).all()
    with fiona.open(out, layer="footprint") as layer:
        feature = next(iter(layer))
        assert feature["properties"]["dbId"] == "abc"
        assert feature["properties"]["max_zoom"] == SYNTH_ZOOM
        assert shape(feature["geometry"]).equals(shapely.box(*result.bounds))


def test_export_reprojected_mixed(tmp_path: Path, rgb_byte: str) -> None:
    info = inspect_raster(rgb_byte)
    out = tmp_path / "rgb.gpkg"
    max_zoom = info.max_zoom + 2  # deep enough to have tiles fully inside the rotated scene
    result = export_gpkg(rgb_byte, info.bounds_4326, max_zoom, out, footprint=info.footprint, workers=2)
    assert _validate(out) == []
    conn = _check_structure(out, max_zoom)
    blobs = [r[0] for r in conn.execute("SELECT tile_data FROM tiles")]
    conn.close()
    assert len(blobs) == result.tiles_written
    kinds = {b[:3] == b"\xff\xd8\xff" for b in blobs}
    assert kinds == {True, False}  # JPEG inside, PNG on the edges
    with rasterio.open(out) as gpkg:
        assert tuple(gpkg.bounds) == pytest.approx(snap_bbox(info.bounds_4326, max_zoom))
        assert gpkg.count == 4
        alpha = gpkg.read(4, out_shape=(gpkg.height // 4, gpkg.width // 4))
        assert 0 < (alpha > 0).mean() < 0.9  # the footprint, not the bbox
    with fiona.open(out, layer="footprint") as layer:
        geom = shape(next(iter(layer))["geometry"])
        assert geom.symmetric_difference(shape(info.footprint)).area < 1e-9


def test_failed_export_leaves_nothing(
    tmp_path: Path, synth_cog: str, synth_bounds: tuple[float, ...]
) -> None:
    out = tmp_path / "fail.gpkg"

    def boom(done: int, total: int) -> None:
        if done > 0:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        export_gpkg(synth_cog, synth_bounds, SYNTH_ZOOM, out, progress=boom, batch_tiles=1)
    assert not out.exists() and not partial_path(out).exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever rasterio raises for a missing file
        export_gpkg(str(tmp_path / "missing.tif"), synth_bounds, 5, out)
    assert not out.exists() and not partial_path(out).exists()
    assert list(tmp_path.iterdir()) == []


def test_process_executor(tmp_path: Path, synth_cog: str, synth_bounds: tuple[float, ...]) -> None:
    a = export_gpkg(
        synth_cog, synth_bounds, 10, tmp_path / "t.gpkg", workers=2, executor="thread", batch_tiles=1
    )
    b = export_gpkg(
        synth_cog, synth_bounds, 10, tmp_path / "p.gpkg", workers=2, executor="process", batch_tiles=1
    )
    assert a.tiles_written == b.tiles_written > 0


def test_write_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "x.gpkg"
    path.write_bytes(b"abc" * 1000)
    info = write_sidecar(path)
    assert info == {"file": "x.gpkg", "size": 3000, "sha256": hashlib.sha256(b"abc" * 1000).hexdigest()}
    assert json.loads((tmp_path / "x.gpkg.sha256.json").read_text()) == info
    assert mapping  # keep import used
