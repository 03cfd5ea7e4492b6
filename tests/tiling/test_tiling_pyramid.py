"""Pyramid work units: planning, 2×2 downsampling in memory, chunked reads, the aligned fast read path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import tiling.render as render_mod
from tiling.grid import Batch, TileRange, WorkUnit, parent_range, plan_pyramid, plan_units, tile_range, unit_levels
from tiling.pipeline import export_gpkg
from tiling.render import decode_tile, downsample2, render_batch

from .conftest import SYNTH_ZOOM


def _tiles(tiles):  # type: ignore[no-untyped-def]
    return {(t.zoom, t.col, t.row): decode_tile(t.data) for t in tiles}


@pytest.mark.parametrize("batch_tiles", [1, 4, 16, 64, 100, 256])
@pytest.mark.parametrize("min_zoom", [0, 5, 9])
def test_plan_units_cover_every_tile_once(batch_tiles: int, min_zoom: int) -> None:
    bbox = (10.0013, 44.9021, 10.31, 45.1377)
    ranges, units = plan_units(bbox, 12, min_zoom, batch_tiles)
    assert [r.zoom for r in ranges] == list(range(min_zoom, 13))
    assert ranges[-1] == tile_range(bbox, 12)
    # the coarser ranges are the ancestors of the finest one (same tiles as planning zoom by zoom here)
    assert ranges == plan_pyramid(bbox, 12, min_zoom)
    seen: list[tuple[int, int, int]] = []
    for unit in units:
        for rng in unit.ranges():
            seen += [(rng.zoom, c, r) for c, r in rng]
    expected = [(r.zoom, c, row) for r in ranges for c, row in r]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert sum(u.count for u in units) == sum(r.count for r in ranges)
    zooms = [u.batch.zoom for u in units]
    for unit in units:
        assert unit_levels(unit.batch.zoom, 12, zooms, min_zoom) == unit.levels
        if unit.levels:  # aligned (or clipped by its zoom's range): every derived tile's children are in it
            side = 1 << unit.levels
            own = next(r for r in ranges if r.zoom == unit.batch.zoom)
            assert unit.batch.min_col % side == 0 or unit.batch.min_col == own.min_col
            assert unit.batch.min_row % side == 0 or unit.batch.min_row == own.min_row


def test_unit_levels_of_a_zoom_by_zoom_plan_is_zero() -> None:
    assert unit_levels(14, 14, range(15)) == 0
    assert unit_levels(9, 14, [14, 9, 8]) == 0
    assert unit_levels(14, 14, [14, 14, 9, 8]) == 4
    assert unit_levels(3, 3, [3, 3]) == 3


def test_parent_range() -> None:
    b = Batch(5, 3, 4, 9, 4)
    assert parent_range(b, 0) == TileRange(5, 3, 4, 9, 4)
    assert parent_range(b, 1) == TileRange(4, 1, 2, 4, 2)
    assert parent_range(b, 2) == TileRange(3, 0, 1, 2, 1)
    with pytest.raises(ValueError):
        parent_range(b, 6)
    assert WorkUnit(b, 1).count == 7 + 4


def test_downsample2_means_of_opaque_children() -> None:
    pixels = np.array([[10, 20, 0, 0], [30, 41, 0, 7]], np.uint8)[..., None].repeat(3, axis=2)
    alpha = np.array([[1, 1, 0, 0], [1, 1, 0, 1]], bool)
    out, a = downsample2(pixels, alpha)
    assert a.tolist() == [[True, True]]
    assert out[0, :, 0].tolist() == [25, 7]  # (10+20+30+41)/4 = 25.25 -> 25; only one opaque child -> 7
    full, fa = downsample2(np.full((2, 2), 3, np.uint8), np.ones((2, 2), bool))
    assert fa.all() and full.tolist() == [[3]]
    empty, ea = downsample2(np.zeros((2, 2), np.uint8), np.zeros((2, 2), bool))
    assert not ea.any() and empty.tolist() == [[0]]



def _mean_of_opaque_children(pixels: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, pixel by pixel: rounded mean of the opaque children, 0 where none is."""
    h, w = alpha.shape[0] // 2, alpha.shape[1] // 2
    out = np.zeros((h, w) + pixels.shape[2:], np.uint8)
    opaque = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            kids = [(2 * y + dy, 2 * x + dx) for dy in (0, 1) for dx in (0, 1) if alpha[2 * y + dy, 2 * x + dx]]
            if kids:
                total = sum(pixels[k].astype(np.int64) for k in kids)
                out[y, x] = (total + len(kids) // 2) // len(kids)
                opaque[y, x] = True
    return out, opaque


@pytest.mark.parametrize("mask", ["opaque", "edge", "holes", "ragged", "empty"])
@pytest.mark.parametrize("bands", [0, 3])
def test_downsample2_matches_its_definition(mask: str, bands: int) -> None:
    # every path of downsample2 (Pillow for opaque blocks, Pillow + edge fix-up, all-numpy for ragged masks)
    rng = np.random.default_rng(7)
    shape = (64, 96) + ((bands,) if bands else ())
    alpha = np.ones(shape[:2], bool)
    if mask == "edge":
        alpha[:, 37:] = False
        alpha[51:] = False
    elif mask == "holes":
        alpha[rng.random(alpha.shape) < 0.01] = False
    elif mask == "ragged":
        alpha = rng.random(alpha.shape) < 0.5
    elif mask == "empty":
        alpha[:] = False
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels *= alpha[..., None] if bands else alpha
    out, opaque = downsample2(pixels, alpha)
    want, want_opaque = _mean_of_opaque_children(pixels, alpha)
    assert out.dtype == np.uint8 and out.shape == want.shape
    assert np.array_equal(opaque, want_opaque)
    assert np.array_equal(out, want)
    # the same block stored RGBX (4 bytes per pixel, the layout reads produce) gives the same values
    if bands == 3:
        rgbx = render_mod.rgbx_block(*shape[:2])
        rgbx[...] = pixels
        out4, opaque4 = downsample2(rgbx, alpha)
        assert np.array_equal(out4, want) and np.array_equal(opaque4, want_opaque)
        assert out4.strides[1:] == (4, 1)  # and stays RGBX for the next level

def _unit_batch(source_bounds: tuple[float, ...], zoom: int) -> Batch:
    r = tile_range(source_bounds, zoom)
    return Batch(zoom, r.min_col, r.min_row, r.max_col, r.max_row)


@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_levels_are_downsampled_finer_zoom(synth_cog: str, synth_bounds: tuple[float, ...], chunk: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod, "CHUNK_TILES", chunk)
    batch = _unit_batch(synth_bounds, SYNTH_ZOOM)
    assert batch.min_col % 2 == 1 or batch.max_col % 2 == 0 or batch.min_row % 2 == 1  # exercises padding
    tiles = _tiles(render_batch(synth_cog, batch, tile_format="png", levels=2))
    fine = _tiles(render_batch(synth_cog, batch, tile_format="png"))
    assert {k: v for k, v in tiles.items() if k[0] == SYNTH_ZOOM}.keys() == fine.keys()
    for key, (rgb, alpha) in fine.items():
        assert np.array_equal(tiles[key][0], rgb) and np.array_equal(tiles[key][1], alpha)
    # rebuild zoom z-1 from the finest tiles with downsample2 and compare exactly
    r1 = parent_range(batch, 1)
    canvas = np.zeros((r1.nrows * 512, r1.ncols * 512, 3), np.uint8)
    calpha = np.zeros(canvas.shape[:2], bool)
    for (_z, col, row), (rgb, alpha) in fine.items():
        y, x = (row - 2 * r1.min_row) * 256, (col - 2 * r1.min_col) * 256
        canvas[y : y + 256, x : x + 256], calpha[y : y + 256, x : x + 256] = rgb, alpha
    small, salpha = downsample2(canvas, calpha)
    level1 = {k: v for k, v in tiles.items() if k[0] == SYNTH_ZOOM - 1}
    assert level1 and set(level1) <= {(SYNTH_ZOOM - 1, c, r) for c, r in r1}
    for (_z, col, row), (rgb, alpha) in level1.items():
        y, x = (row - r1.min_row) * 256, (col - r1.min_col) * 256
        assert np.array_equal(alpha, salpha[y : y + 256, x : x + 256])
        assert np.array_equal(rgb[alpha], small[y : y + 256, x : x + 256][alpha])
    assert any(k[0] == SYNTH_ZOOM - 2 for k in tiles)


@pytest.mark.parametrize("chunk", [1, 2])
def test_quadtree_unit_matches_whole_read(synth_cog: str, synth_bounds: tuple[float, ...], chunk: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit walked as a quadtree of small reads yields exactly the tiles of one whole read, every zoom."""
    batch = _unit_batch(synth_bounds, SYNTH_ZOOM)
    whole = render_batch(synth_cog, batch, tile_format="png", levels=3)
    monkeypatch.setattr(render_mod, "CHUNK_TILES", chunk)
    quad = render_batch(synth_cog, batch, tile_format="png", levels=3)
    assert sorted((t.zoom, t.col, t.row, t.data) for t in quad) == sorted((t.zoom, t.col, t.row, t.data) for t in whole)
    assert {t.zoom for t in quad} == set(range(SYNTH_ZOOM - 3, SYNTH_ZOOM + 1))


def test_encode_pool_and_emit_give_the_same_tiles(synth_cog: str, synth_bounds: tuple[float, ...],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod, "CHUNK_TILES", 2)
    monkeypatch.setattr(render_mod, "MAX_PENDING_ENCODES", 3)  # exercises the back-pressure
    batch = _unit_batch(synth_bounds, SYNTH_ZOOM)
    inline = render_batch(synth_cog, batch, tile_format="mixed", levels=2)
    pooled = render_batch(synth_cog, batch, tile_format="mixed", levels=2, pool=render_mod.encode_pool())
    emitted: list = []
    assert render_batch(synth_cog, batch, tile_format="mixed", levels=2, pool=render_mod.encode_pool(),
                        emit=emitted.append) == []
    assert inline and pooled == inline and emitted == inline


def test_aligned_fast_path_matches_warped_read(synth_cog: str, synth_bounds: tuple[float, ...],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _unit_batch(synth_bounds, SYNTH_ZOOM)
    fast = _tiles(render_batch(synth_cog, batch, tile_format="png"))
    monkeypatch.setattr(render_mod, "_aligned_window", lambda *a, **k: None)  # every aligned read off
    warped = _tiles(render_batch(synth_cog, batch, tile_format="png"))
    assert fast.keys() == warped.keys()
    for key, (rgb, alpha) in fast.items():
        w_rgb, w_alpha = warped[key]
        assert (alpha != w_alpha).mean() < 0.002
        both = alpha & w_alpha
        assert np.abs(rgb.astype(int) - w_rgb.astype(int))[both].max(initial=0) <= 1


def test_clip_bounds_make_pixels_outside_transparent(synth_cog: str, synth_bounds: tuple[float, ...]) -> None:
    batch = _unit_batch(synth_bounds, SYNTH_ZOOM)
    minx, miny, maxx, maxy = batch.bounds
    clip = (minx, miny, minx + (maxx - minx) / 2, maxy)  # the western half of the block
    tiles = render_batch(synth_cog, batch, tile_format="png", clip_bounds=clip)
    mid = batch.min_col + batch.ncols // 2 if batch.ncols % 2 == 0 else None
    assert tiles
    for t in tiles:
        if mid is not None:
            assert t.col < mid


def test_export_pyramid_zooms_and_counts(tmp_path: Path, synth_cog: str, synth_bounds: tuple[float, ...]) -> None:
    out = tmp_path / "p.gpkg"
    result = export_gpkg(synth_cog, synth_bounds, SYNTH_ZOOM, out, min_zoom=0, tile_format="mixed", batch_tiles=4)
    ranges, _units = plan_units(synth_bounds, SYNTH_ZOOM, 0, 4)
    assert result.tiles_planned == sum(r.count for r in ranges)
    con = sqlite3.connect(out)
    stored = {(z, c, r) for z, c, r in con.execute("SELECT zoom_level, tile_column, tile_row FROM tiles")}
    con.close()
    # zooms whose tiles are far coarser than the whole raster may stay empty (sub-pixel source)
    assert set(range(SYNTH_ZOOM - 4, SYNTH_ZOOM + 1)) <= {z for z, _c, _r in stored}
    allowed = {(r.zoom, c, row) for r in ranges for c, row in r}
    assert stored <= allowed and len(stored) == result.tiles_written
