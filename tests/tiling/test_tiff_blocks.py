"""Direct block reads of tiled RGB(A) GeoTIFFs give exactly what GDAL reads, and everything else is left
to GDAL. Rasters are written by the tests with rasterio (GDAL's GTiff/COG writers)."""

from __future__ import annotations

import concurrent.futures as cf
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window

import tiling.render as render_mod
import tiling.tiff_blocks as tiff_blocks
from tiling.grid import Batch, resolution_for_zoom, tile_range
from tiling.render import render_batch
from tiling.tiff_blocks import blocks_for

W, H = 1000, 700
ZOOM = 12
RES = resolution_for_zoom(ZOOM)
WEST = -180.0 + (round(190.0 / RES) + 37) * RES  # on the zoom-12 pixel lattice, off a tile corner
NORTH = 90.0 - (round(45.0 / RES) + 21) * RES


def _pixels(bands: int, seed: int = 5) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(seed)
    rgb = np.stack([(xx * 255 // W), (yy * 255 // H), (xx + yy) % 256]).astype(np.uint8)
    rgb[2] ^= rng.integers(0, 8, (H, W), dtype=np.uint8)  # texture: the predictor has work to do
    if bands == 3:
        return rgb
    alpha = np.full((H, W), 255, np.uint8)
    alpha[(yy - 350) ** 2 + (xx - 500) ** 2 > 330**2] = 0
    alpha[100:140, 600:900] = 128  # partial alpha is opaque for the renderer, but read as is
    rgb[:, alpha == 0] = rng.integers(0, 256, (3, int((alpha == 0).sum())), dtype=np.uint8)  # not zeroed
    return np.concatenate([rgb, alpha[None]])


def _write(path: Path, bands: int = 4, **options: object) -> Path:
    profile: dict[str, object] = dict(
        driver="GTiff", width=W, height=H, count=bands, dtype="uint8", crs="EPSG:4326",
        transform=from_origin(WEST, NORTH, RES, RES), tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", predictor=2, photometric="RGB",
    )
    if bands == 4:
        profile["alpha"] = "YES"
    profile.update(options)
    profile = {k: v for k, v in profile.items() if v is not None}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(_pixels(bands))
        if bands == 4:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return path


WINDOWS = [(0, 0, W, H), (37, 21, 337, 321), (W - 100, H - 50, W, H), (255, 255, 257, 257), (256, 0, 512, 256)]


def _assert_reads_like_gdal(path: Path, bands: int) -> None:
    with rasterio.open(path) as src:
        blocks = blocks_for(src, [1, 2, 3])
        assert blocks is not None
        for c0, r0, c1, r1 in WINDOWS:
            got = blocks.read(c0, r0, c1, r1)
            want = src.read(window=Window(c0, r0, c1 - c0, r1 - r0))
            assert got.shape == (r1 - r0, c1 - c0, 4)
            assert np.array_equal(np.moveaxis(got[..., :bands], -1, 0), want), (c0, r0, c1, r1)


@pytest.mark.parametrize(
    ("bands", "options"),
    [
        (4, {}),
        (3, {"compress": "lzw"}),
        (4, {"compress": "zstd", "predictor": None}),
        (3, {"compress": None, "predictor": None}),
        (4, {"compress": "deflate", "blockxsize": 512, "blockysize": 128}),
    ],
)
def test_blocks_read_what_gdal_reads(tmp_path: Path, bands: int, options: dict[str, object]) -> None:
    _assert_reads_like_gdal(_write(tmp_path / "src.tif", bands, **options), bands)


def test_cog_full_resolution_is_read_directly(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain.tif")
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(plain, cog, driver="COG", BLOCKSIZE=256, OVERVIEW_RESAMPLING="AVERAGE", PREDICTOR="YES")
    _assert_reads_like_gdal(cog, 4)


def test_sparse_blocks_read_as_zero(tmp_path: Path) -> None:
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=4, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(WEST, NORTH, RES, RES), tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", photometric="RGB", alpha="YES",
                       sparse_ok=True) as dst:
        dst.write(_pixels(4)[:, 256:512, 256:512], window=Window(256, 256, 256, 256))
    with rasterio.open(path) as src:
        blocks = blocks_for(src, [1, 2, 3])
        assert blocks is not None and 0 in blocks.offsets  # really sparse
        got = blocks.read(0, 0, W, H)
        assert np.array_equal(np.moveaxis(got, -1, 0), src.read())
        assert got[256:512, 256:512].any() and not got[:256].any()


@pytest.mark.parametrize(
    "case",
    ["nodata", "internal-mask", "jpeg", "band-interleaved", "uint16", "two-bands", "stripped"],
)
def test_other_files_are_left_to_gdal(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.tif"
    if case == "nodata":
        _write(path, 3, nodata=0)
    elif case == "internal-mask":
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            _write(path, 3)
            with rasterio.open(path, "r+") as dst:
                dst.write_mask(np.full((H, W), 255, np.uint8))
    elif case == "jpeg":
        _write(path, 3, compress="jpeg", predictor=None)
    elif case == "band-interleaved":
        _write(path, 4, interleave="band")
    elif case == "uint16":
        with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint16",
                           crs="EPSG:4326", transform=from_origin(WEST, NORTH, RES, RES), tiled=True) as dst:
            dst.write(_pixels(3).astype("uint16"))
    elif case == "two-bands":
        with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=2, dtype="uint8",
                           crs="EPSG:4326", transform=from_origin(WEST, NORTH, RES, RES), tiled=True) as dst:
            dst.write(_pixels(3)[:2])
    elif case == "stripped":
        _write(path, 4, tiled=False, blockxsize=None, blockysize=None)
    with rasterio.open(path) as src:
        assert blocks_for(src, [1, 2, 3]) is None


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = _write(tmp_path / "src.tif")
    with rasterio.open(path) as src:
        first = blocks_for(src, [1, 2, 3])
        assert first is not None
        before = first.read(0, 0, 300, 300)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.full((4, 300, 300), 7, np.uint8), window=Window(0, 0, 300, 300))
    os.utime(path, ns=(1, 1))  # a new version even within the clock's resolution
    with rasterio.open(path) as src:
        again = blocks_for(src, [1, 2, 3])
        assert again is not None and again.key != first.key
        assert (again.read(0, 0, 300, 300) == 7).all() and not (before == 7).all()


def test_concurrent_reads_with_evictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a cache of 3 blocks: blocks are evicted and their buffers decoded into again while other threads read
    monkeypatch.setattr(tiff_blocks, "_CACHE", tiff_blocks._BlockCache(3 * 256 * 256 * 4))
    path = _write(tmp_path / "src.tif")
    with rasterio.open(path) as src:
        want = np.moveaxis(src.read(), 0, -1)
        blocks = blocks_for(src, [1, 2, 3])
    assert blocks is not None
    rng = np.random.default_rng(1)
    windows = []
    for _ in range(200):
        c0, r0 = int(rng.integers(0, W - 1)), int(rng.integers(0, H - 1))
        windows.append((c0, r0, int(rng.integers(c0 + 1, min(W, c0 + 600) + 1)),
                        int(rng.integers(r0 + 1, min(H, r0 + 600) + 1))))

    def check(window: tuple[int, int, int, int]) -> bool:
        c0, r0, c1, r1 = window
        return np.array_equal(blocks.read(c0, r0, c1, r1), want[r0:r1, c0:c1])

    with cf.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, windows))


@pytest.mark.parametrize("fmt", ["mixed", "png"])
def test_rendered_tiles_are_the_same_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    # the whole raster (edges, alpha, unzeroed RGB under alpha 0), with a pyramid above the finest zoom
    path = str(_write(tmp_path / "src.tif"))
    r = tile_range((WEST, NORTH - H * RES, WEST + W * RES, NORTH), ZOOM)
    batch = Batch(ZOOM, r.min_col, r.min_row, r.max_col, r.max_row)
    with rasterio.open(path) as src:
        assert blocks_for(src, [1, 2, 3]) is not None
    direct = render_batch(path, batch, tile_format=fmt, levels=2)
    monkeypatch.setattr(render_mod, "blocks_for", lambda *a, **k: None)  # GDAL's aligned read instead
    through_gdal = render_batch(path, batch, tile_format=fmt, levels=2)
    assert direct and direct == through_gdal


@pytest.mark.parametrize("case", ["rgba", "rgb-nodata"])
@pytest.mark.parametrize("window", [(0, 0, 512, 512), (-100, -60, 412, 452), (W - 300, H - 200, W + 212, H + 312),
                                    (W + 10, 0, W + 266, 256)])
def test_gdal_strip_reads_match_whole_reads(tmp_path: Path, case: str, window: tuple[int, int, int, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod, "STRIP_ROWS", 100)  # several strips of uneven placement
    # the GDAL read into an RGB block, strip by strip, against one band-sequential read
    path = _write(tmp_path / "src.tif", 4) if case == "rgba" else _write(tmp_path / "src.tif", 3, nodata=0)
    col, row, right, bottom = window
    width, height = right - col, bottom - row
    with rasterio.open(path) as src:
        transform = src.transform * rasterio.Affine.translation(col, row)
        placed = render_mod._aligned_window(src, transform, width, height)
        assert placed is not None and placed[:2] == (col, row)
        pixels, alpha = render_mod._read_aligned_rgb(src, [1, 2, 3], placed, width, height)
        data, want_alpha = render_mod._read_aligned(src, [1, 2, 3], transform, width, height)
    assert pixels.flags.c_contiguous
    assert np.array_equal(alpha, want_alpha)
    assert np.array_equal(pixels, np.moveaxis(data, 0, -1))
