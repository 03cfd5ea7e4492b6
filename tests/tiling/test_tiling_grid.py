from __future__ import annotations

import json
import math

import pytest

from tiling.grid import (
    TMS,
    Batch,
    TileRange,
    estimate_package_bytes,
    plan_batches,
    plan_pyramid,
    resolution_for_zoom,
    snap_bbox,
    tile_range,
    zoom_for_resolution,
)


def test_tms_is_world_crs84_quad() -> None:
    assert TMS.id == "WorldCRS84Quad"
    assert TMS.matrix(0).matrixWidth == 2 and TMS.matrix(0).matrixHeight == 1


def test_resolution_for_zoom() -> None:
    assert resolution_for_zoom(0) == 0.703125
    assert resolution_for_zoom(14) == 180 / 256 / 2**14
    for z in range(0, 21):
        assert math.isclose(resolution_for_zoom(z), TMS.matrix(z).cellSize)
    with pytest.raises(ValueError):
        resolution_for_zoom(-1)


def test_zoom_for_resolution_seed_value() -> None:
    assert zoom_for_resolution(0.0000429153442382812) == 14


@pytest.mark.parametrize("zoom", range(0, 31))
def test_zoom_for_resolution_exact_and_float_noise(zoom: int) -> None:
    res = resolution_for_zoom(zoom)
    assert zoom_for_resolution(res) == zoom
    assert zoom_for_resolution(res * (1 + 1e-12)) == zoom  # a hair coarser: still this zoom
    assert zoom_for_resolution(res * (1 - 1e-12)) == zoom  # a hair finer: not the next zoom
    if zoom < 30:
        assert zoom_for_resolution(res * 0.75) == zoom  # between zooms: the coarser one


def test_zoom_for_resolution_coarse_values() -> None:
    assert zoom_for_resolution(0.703125) == 0
    assert zoom_for_resolution(0.703125 / 2) == 1
    assert zoom_for_resolution(0.5) == 0
    assert zoom_for_resolution(5.0) == 0
    assert zoom_for_resolution(1000) == 0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), float("-inf"), "abc", None])
def test_zoom_for_resolution_invalid(bad: object) -> None:
    with pytest.raises(ValueError):
        zoom_for_resolution(bad)  # type: ignore[arg-type]


def test_zoom_for_resolution_finer_than_max_zoom() -> None:
    with pytest.raises(ValueError, match="finer than zoom 10"):
        zoom_for_resolution(resolution_for_zoom(11), max_zoom=10)
    assert zoom_for_resolution(resolution_for_zoom(10), max_zoom=10) == 10
    with pytest.raises(ValueError):
        zoom_for_resolution(1e-12)


def test_tile_range_world() -> None:
    r = tile_range((-180, -90, 180, 90), 0)
    assert (r.min_col, r.min_row, r.max_col, r.max_row, r.count) == (0, 0, 1, 0, 2)
    assert r.bounds == (-180.0, -90.0, 180.0, 90.0)
    r3 = tile_range((-180, -90, 180, 90), 3)
    assert r3.count == 16 * 8


def test_tile_range_edges_do_not_pull_neighbours() -> None:
    # exactly one tile at zoom 1: lon 0..90, lat 0..90 -> col 2, row 0
    r = tile_range((0, 0, 90, 90), 1)
    assert (r.min_col, r.min_row, r.max_col, r.max_row) == (2, 0, 2, 0)
    # float noise on the edges does not pull the neighbours either
    r = tile_range((0 - 1e-12, 0 + 1e-12, 90 + 1e-12, 90), 1)
    assert r.count == 1
    # a bbox crossing an edge by a real amount does
    r = tile_range((-0.001, 0, 90, 90), 1)
    assert (r.min_col, r.max_col) == (1, 2)
    # degenerate-but-valid small bbox inside a tile
    r = tile_range((10, 10, 10.000001, 10.000001), 5)
    assert r.count == 1


def test_tile_range_rows_from_north() -> None:
    z = 4
    size = 180 / 2**z
    r = tile_range((0.5, 90 - size * 3 + 0.1, 1.0, 90 - 0.1), z)
    assert (r.min_row, r.max_row) == (0, 2)
    minx, miny, maxx, maxy = r.bounds
    assert maxy == 90 and math.isclose(miny, 90 - 3 * size)


def test_tile_range_clips_to_world_and_rejects_bad_bbox() -> None:
    r = tile_range((-200, -100, -170, 95), 2)
    assert r.min_col == 0 and r.min_row == 0 and r.max_row == 3
    for bad in [(1, 1, 1, 2), (2, 1, 1, 2), (0, 0, float("nan"), 1), (190, 0, 200, 1), (0, 1, 2)]:
        with pytest.raises(ValueError):
            tile_range(bad, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tile_range((0, 0, 1, 1), 31)


def test_snap_bbox_contains_bbox() -> None:
    bbox = (34.123, 31.456, 35.789, 32.987)
    for z in (0, 5, 10, 14):
        minx, miny, maxx, maxy = snap_bbox(bbox, z)
        assert minx <= bbox[0] and miny <= bbox[1] and maxx >= bbox[2] and maxy >= bbox[3]
        res = 180 / 2**z
        assert maxx - minx < bbox[2] - bbox[0] + 2 * res + 1e-9


def test_plan_pyramid() -> None:
    ranges = plan_pyramid((34.1, 31.4, 35.8, 33.0), 10, min_zoom=2)
    assert [r.zoom for r in ranges] == list(range(2, 11))
    assert all(isinstance(r, TileRange) for r in ranges)
    counts = [r.count for r in ranges]
    assert counts == sorted(counts)
    with pytest.raises(ValueError):
        plan_pyramid((0, 0, 1, 1), 3, min_zoom=4)


@pytest.mark.parametrize("batch_tiles", [1, 4, 10, 64, 256])
def test_plan_batches_cover_every_tile_once(batch_tiles: int) -> None:
    ranges = plan_pyramid((34.1, 31.4, 35.8, 33.0), 9)
    batches = plan_batches(ranges, batch_tiles)
    seen: dict[tuple[int, int, int], int] = {}
    for b in batches:
        assert b.count <= batch_tiles
        for col, row in b:
            seen[(b.zoom, col, row)] = seen.get((b.zoom, col, row), 0) + 1
    expected = {(r.zoom, c, w) for r in ranges for c, w in r}
    assert set(seen) == expected
    assert all(n == 1 for n in seen.values())
    # aligned to the global grid, in a deterministic order
    side = math.isqrt(batch_tiles)
    for b in batches:
        assert b.min_col // side == b.max_col // side and b.min_row // side == b.max_row // side
    keys = [(b.zoom, b.min_row, b.min_col) for b in batches]
    assert keys == sorted(keys)
    assert plan_batches(ranges, batch_tiles) == batches


def test_batches_are_identical_for_overlapping_jobs() -> None:
    a = set(plan_batches(plan_pyramid((30.0, 30.0, 40.0, 40.0), 9), 16))
    b = plan_batches(plan_pyramid((30.0, 30.0, 35.0, 40.0), 9), 16)
    full_blocks = [x for x in b if x.count == 16]
    assert full_blocks and all(x in a for x in full_blocks)


def test_batch_serialisation_and_key() -> None:
    b = Batch(14, 100, 20, 115, 35)
    assert b.key == "z14-c100-r20-c115-r35"
    assert b.count == 256
    d = json.loads(json.dumps(b.to_dict()))
    assert Batch.from_dict(d) == b
    assert b.bounds == TileRange(14, 100, 20, 115, 35).bounds
    with pytest.raises(ValueError):
        Batch(1, 3, 0, 2, 0)
    with pytest.raises(ValueError):
        Batch(0, 0, 0, 2, 0)  # zoom 0 has only 2 columns
    with pytest.raises(ValueError):
        plan_batches([], 0)


def test_estimate_package_bytes() -> None:
    ranges = plan_pyramid((34.1, 31.4, 35.8, 33.0), 10)
    tiles = sum(r.count for r in ranges)
    est = estimate_package_bytes(ranges)
    assert est > tiles * 100_000
    assert estimate_package_bytes(ranges, bytes_per_tile=1000) < est
    assert estimate_package_bytes([]) > 0
