from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject
from rio_tiler.io import Reader
from shapely.geometry import mapping

from tiling.grid import TMS, Batch, plan_batches, tile_range
from tiling.inspect import inspect_raster
from tiling.render import EncodedTile, decode_tile, encode_jpeg, render_batch, render_tiles_iter

from .conftest import SYNTH_ZOOM, write_synthetic

warnings.filterwarnings("ignore", message=".*has no Overviews.*")


def _whole_range_batch(source: str, zoom: int) -> Batch:
    r = tile_range(inspect_raster(source).bounds_4326, zoom)
    return Batch(zoom, r.min_col, r.min_row, r.max_col, r.max_row)


def _compare_with_reader_tile(source: str, tiles: list[EncodedTile], resampling: str) -> list[float]:
    """Mean absolute difference per tile (valid pixels, RGB) against rio-tiler's Reader.tile."""
    diffs = []
    with Reader(source, tms=TMS) as reader:
        for tile in tiles:
            ref = reader.tile(
                tile.col, tile.row, tile.zoom, resampling_method=resampling, reproject_method=resampling
            )
            rgb, alpha = decode_tile(tile.data)
            ref_alpha = ref.mask > 0
            # the outlines agree (a handful of pixels on the nodata edge at most)
            assert (alpha != ref_alpha).mean() < 0.002
            both = alpha & ref_alpha
            ref_rgb = np.moveaxis(ref.data[:3], 0, -1) if ref.count >= 3 else np.dstack([ref.data[0]] * 3)
            diffs.append(float(np.abs(rgb.astype(int) - ref_rgb.astype(int))[both].mean()))
    return diffs


@pytest.mark.parametrize("zoom", [SYNTH_ZOOM, SYNTH_ZOOM - 1, SYNTH_ZOOM - 3])
def test_pixels_match_reader_tile_nearest(synth_cog: str, zoom: int) -> None:
    tiles = render_batch(
        synth_cog, _whole_range_batch(synth_cog, zoom), tile_format="png", resampling="nearest"
    )
    assert tiles
    assert max(_compare_with_reader_tile(synth_cog, tiles, "nearest")) == 0.0


@pytest.mark.parametrize("zoom", [SYNTH_ZOOM, SYNTH_ZOOM - 1, SYNTH_ZOOM - 2])
def test_pixels_match_reader_tile_bilinear(synth_cog: str, zoom: int) -> None:
    tiles = render_batch(synth_cog, _whole_range_batch(synth_cog, zoom), tile_format="png")
    assert max(_compare_with_reader_tile(synth_cog, tiles, "bilinear")) < 1.0


def test_reprojected_overzoom_matches_reader_tile(rgb_byte: str) -> None:
    # zoom 8 is finer than the 300 m pixels: the warp is done at output resolution by both
    batch = _whole_range_batch(rgb_byte, 8)
    bilinear = render_batch(rgb_byte, batch, tile_format="png")[:8]
    assert bilinear
    assert max(_compare_with_reader_tile(rgb_byte, bilinear, "bilinear")) < 1.0
    nearest = render_batch(rgb_byte, batch, tile_format="png", resampling="nearest")[:8]
    assert max(_compare_with_reader_tile(rgb_byte, nearest, "nearest")) < 0.5


def test_reprojected_downsampled_matches_full_warp(rgb_byte: str) -> None:
    """At zooms coarser than the source, compare with a whole-image GDAL warp of the same grid.

    (``Reader.tile`` is not a good reference there: GDAL's warper derives its downsampling kernel from each
    warp chunk, so rio-tiler's per-tile reads differ from each other by up to ~8 grey levels; we pin the
    kernel scale instead, see tiling.render.)
    """
    zoom = 7
    batch = _whole_range_batch(rgb_byte, zoom)
    tiles = render_batch(rgb_byte, batch, tile_format="png")
    width, height = batch.ncols * 256, batch.nrows * 256
    ref = np.zeros((3, height, width), dtype=np.uint8)
    with rasterio.open(rgb_byte) as src:
        reproject(
            rasterio.band(src, [1, 2, 3]),
            ref,
            src_nodata=0,
            dst_nodata=0,
            dst_transform=from_bounds(*batch.bounds, width, height),
            dst_crs=TMS.rasterio_crs,
            resampling=Resampling.bilinear,
        )
    for tile in tiles:
        rgb, alpha = decode_tile(tile.data)
        y0, x0 = (tile.row - batch.min_row) * 256, (tile.col - batch.min_col) * 256
        expected = np.moveaxis(ref[:, y0 : y0 + 256, x0 : x0 + 256], 0, -1)
        both = alpha & (expected.min(axis=-1) > 0)
        assert np.abs(rgb.astype(int) - expected.astype(int))[both].mean() < 2.0


def test_tiles_do_not_depend_on_batching(rgb_byte: str) -> None:
    zoom = 7
    rng = tile_range(inspect_raster(rgb_byte).bounds_4326, zoom)
    big = {
        (t.col, t.row): t.data
        for t in render_tiles_iter(rgb_byte, plan_batches([rng], 256), tile_format="png")
    }
    small = {
        (t.col, t.row): t.data for t in render_tiles_iter(rgb_byte, plan_batches([rng], 1), tile_format="png")
    }
    assert big.keys() == small.keys()
    for key in big:
        a, _ = decode_tile(big[key])
        b, _ = decode_tile(small[key])
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5  # only the 0.125 px warp approximation


def test_empty_tiles_are_skipped(synth_cog: str) -> None:
    # far away from the raster: nothing
    assert render_batch(synth_cog, Batch(SYNTH_ZOOM, 0, 0, 3, 3)) == []
    batch = _whole_range_batch(synth_cog, SYNTH_ZOOM)
    tiles = render_batch(synth_cog, batch)
    assert 0 < len(tiles) <= batch.count
    for tile in tiles:
        _, alpha = decode_tile(tile.data)
        assert alpha.any()


def test_mixed_format_png_on_edges_jpeg_inside(tmp_path: Path) -> None:
    # a raster covering whole tiles at zoom 12 with a nodata hole on one side
    source = write_synthetic(tmp_path / "full.tif", cog=False)
    with rasterio.open(source, "r+") as ds:
        data = ds.read()
        data[data == 0] = 1  # fully valid
        data[:, :40, :40] = 0  # transparent corner
        ds.write(data)
    batch = _whole_range_batch(str(source), SYNTH_ZOOM)
    tiles = render_batch(str(source), batch, tile_format="mixed")
    by_fmt = {t.fmt for t in tiles}
    assert by_fmt == {"png", "jpeg"}
    for tile in tiles:
        image = Image.open(io.BytesIO(tile.data))
        _, alpha = decode_tile(tile.data)
        if tile.fmt == "jpeg":
            assert image.format == "JPEG" and image.mode == "RGB" and alpha.all()
        else:
            assert image.format == "PNG" and image.mode == "RGBA" and not alpha.all()


def test_png_and_jpeg_modes(tmp_path: Path) -> None:
    source = write_synthetic(tmp_path / "full.tif", cog=False)
    with rasterio.open(source, "r+") as ds:
        data = ds.read()
        data[data == 0] = 1
        data[:, :40, :40] = 0
        ds.write(data)
    batch = _whole_range_batch(str(source), SYNTH_ZOOM)
    png = render_batch(str(source), batch, tile_format="png")
    assert {t.fmt for t in png} == {"png"}
    modes = {Image.open(io.BytesIO(t.data)).mode for t in png}
    assert modes == {"RGB", "RGBA"}  # opaque tiles are written without an alpha channel
    jpeg = render_batch(str(source), batch, tile_format="jpeg", jpeg_quality=70)
    assert {t.fmt for t in jpeg} == {"jpeg"} and len(jpeg) == len(png)
    assert all(Image.open(io.BytesIO(t.data)).format == "JPEG" for t in jpeg)
    with pytest.raises(ValueError):
        render_batch(str(source), batch, tile_format="webp")  # type: ignore[arg-type]


@pytest.mark.parametrize("quality", [30, 85, 100])
@pytest.mark.parametrize("grey", [False, True])
def test_jpeg_bytes_are_pillows(synth_cog: str, quality: int, grey: bool) -> None:
    # encode_jpeg swaps Pillow's encoder for one that releases the GIL: same library and settings, same bytes
    with rasterio.open(synth_cog) as src:
        planar = np.moveaxis(src.read([1, 2, 3], window=((0, 512), (0, 512))), 0, -1)
    block = np.ascontiguousarray(planar)
    tile = block[100:356, 37:293]  # a view into a block, as the pipeline hands tiles over
    if grey:
        tile, planar = tile[..., 1], planar[..., 1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile)).save(buf, format="JPEG", quality=quality, optimize=True)
    assert encode_jpeg(tile, quality) == buf.getvalue()
    assert encode_jpeg(planar[100:356, 37:293], quality) == buf.getvalue()  # any layout is accepted


def test_footprint_clips_pixels(synth_cog: str, synth_bounds: tuple[float, ...]) -> None:
    minx, miny, maxx, maxy = synth_bounds
    west_half = mapping(shapely.box(minx, miny, (minx + maxx) / 2, maxy))
    batch = _whole_range_batch(synth_cog, SYNTH_ZOOM)
    clipped = render_batch(synth_cog, batch, footprint=west_half)
    full = render_batch(synth_cog, batch)
    assert 0 < len(clipped) <= len(full)
    cut = (minx + maxx) / 2
    for tile in clipped:
        _, alpha = decode_tile(tile.data)
        tminx, _, tmaxx, _ = TMS.xy_bounds(tile.col, tile.row, tile.zoom)
        xs = tminx + (np.arange(256) + 0.5) * (tmaxx - tminx) / 256
        assert not alpha[:, xs > cut + 1e-9].any()
    # a footprint far away gives nothing
    assert render_batch(synth_cog, batch, footprint=mapping(shapely.box(100, 10, 101, 11))) == []


def test_single_band_grey(shade: str) -> None:
    batch = _whole_range_batch(shade, 13)
    tiles = render_batch(shade, batch, tile_format="png")
    assert tiles
    modes = {Image.open(io.BytesIO(t.data)).mode for t in tiles}
    assert modes <= {"L", "LA"}
    assert max(_compare_with_reader_tile(shade, tiles[:4], "bilinear")) < 1.0


def test_uint16_is_rescaled(tmp_path: Path, synth_cog: str) -> None:
    source = write_synthetic(tmp_path / "u16.tif", dtype="uint16", cog=False)
    batch = _whole_range_batch(str(source), SYNTH_ZOOM)
    tiles16 = render_batch(str(source), batch, tile_format="png", resampling="nearest")
    tiles8 = render_batch(synth_cog, batch, tile_format="png", resampling="nearest")
    assert len(tiles16) == len(tiles8)
    for a, b in zip(tiles16, tiles8, strict=True):
        rgb16, alpha16 = decode_tile(a.data)
        rgb8, _ = decode_tile(b.data)
        assert rgb16[alpha16].max() == 255 or rgb16[alpha16].max() > 200
        # linear mapping of the same picture: strongly correlated
        corr = np.corrcoef(rgb16[alpha16][:, 0].astype(float), rgb8[alpha16][:, 0].astype(float))[0, 1]
        assert corr > 0.99
    # an explicit range is honoured
    forced = render_batch(str(source), batch, tile_format="png", resampling="nearest", rescale=(0, 25500))
    rgb, alpha = decode_tile(forced[0].data)
    rgb8, _ = decode_tile(tiles8[0].data)
    assert np.abs(rgb.astype(int) - rgb8.astype(int))[alpha].max() <= 1


def test_render_tiles_iter(synth_cog: str) -> None:
    batches = plan_batches([_whole_range_batch(synth_cog, SYNTH_ZOOM)], 1)
    tiles = list(render_tiles_iter(synth_cog, batches, tile_format="png"))
    assert len(tiles) == len(render_batch(synth_cog, _whole_range_batch(synth_cog, SYNTH_ZOOM)))


def test_rgba_alpha_band(tmp_path: Path) -> None:
    from rasterio.enums import ColorInterp

    source = write_synthetic(tmp_path / "rgb.tif", cog=False)
    with rasterio.open(source) as src:
        profile = src.profile
        data = src.read()
        valid = src.dataset_mask()
    profile.update(count=4, nodata=None)
    rgba_path = tmp_path / "rgba.tif"
    with rasterio.open(rgba_path, "w", **profile) as dst:
        dst.write(np.concatenate([data, valid[None]]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    batch = _whole_range_batch(str(source), SYNTH_ZOOM)
    from_alpha = render_batch(str(rgba_path), batch, tile_format="png", resampling="nearest")
    from_nodata = render_batch(str(source), batch, tile_format="png", resampling="nearest")
    assert [(t.col, t.row) for t in from_alpha] == [(t.col, t.row) for t in from_nodata]
    for a, b in zip(from_alpha, from_nodata, strict=True):
        rgb_a, alpha_a = decode_tile(a.data)
        rgb_b, alpha_b = decode_tile(b.data)
        assert np.array_equal(alpha_a, alpha_b) and np.array_equal(rgb_a, rgb_b)


def test_grid_crs_is_the_tms_crs() -> None:
    """render.GRID_CRS is written out (morecantile is not imported for aligned reads); it must stay the CRS
    of the grid's TileMatrixSet, which rio-tiler's Reader uses."""
    from tiling.render import GRID_CRS

    assert GRID_CRS == TMS.rasterio_crs
    assert GRID_CRS.to_wkt() == TMS.rasterio_crs.to_wkt()


@pytest.mark.parametrize("fixture", ["synth_cog", "rgb_byte", "shade"])
def test_non_alpha_indexes_as_rio_tiler(fixture: str, request: pytest.FixtureRequest) -> None:
    from rio_tiler.utils import non_alpha_indexes

    from tiling.render import _non_alpha_indexes

    with rasterio.open(request.getfixturevalue(fixture)) as src:
        assert _non_alpha_indexes(src) == list(non_alpha_indexes(src))
