"""Fixtures for the tiling tests: small synthetic rasters written with rasterio (no network)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from tiling.grid import resolution_for_zoom

RGB_BYTE = Path("/work/shared/data/RGB.byte.tif")
SHADE = Path("/work/shared/data/shade.tif")

#: The synthetic raster: EPSG:4326, pixel size exactly zoom 12, origin on the pixel grid of zoom 12 but
#: not on a tile corner, valid data inside a notched circle (nodata 0 elsewhere).
SYNTH_ZOOM = 12
SYNTH_RES = resolution_for_zoom(SYNTH_ZOOM)
SYNTH_WIDTH, SYNTH_HEIGHT = 640, 512
SYNTH_WEST = -180.0 + (round(190.0 / SYNTH_RES) + 37) * SYNTH_RES  # ~10.0°E, on the zoom-12 pixel lattice
SYNTH_NORTH = 90.0 - (round(45.0 / SYNTH_RES) + 21) * SYNTH_RES  # ~45.0°N


def pytest_configure(config: pytest.Config) -> None:
    warnings.filterwarnings("ignore", message=".*has no Overviews.*")


def _synthetic_pixels(dtype: str = "uint8") -> tuple[np.ndarray, np.ndarray]:
    h, w = SYNTH_HEIGHT, SYNTH_WIDTH
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(42)
    r = 40 + 180 * xx / w + 20 * np.sin(yy / 7.0)
    g = 40 + 180 * yy / h + 20 * np.cos(xx / 9.0)
    b = 128 + 100 * np.sin((xx + yy) / 23.0) + rng.normal(0, 4, size=(h, w))
    data = np.clip(np.stack([r, g, b]), 1, 255)
    cy, cx, radius = h / 2, w / 2, min(h, w) * 0.45
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    notch = (xx > cx) & (np.abs(yy - cy) < h * 0.08)  # a slot cut into the circle: irregular outline
    valid = inside & ~notch
    if dtype == "uint8":
        pixels = data.astype(np.uint8)
    else:
        pixels = (data * 100).astype(dtype)  # e.g. uint16 values 100..25500
    pixels[:, ~valid] = 0
    return pixels, valid


def write_synthetic(path: Path, *, dtype: str = "uint8", bands: int = 3, cog: bool = True) -> Path:
    pixels, _ = _synthetic_pixels(dtype)
    pixels = pixels[:bands]
    profile = {
        "driver": "GTiff",
        "width": SYNTH_WIDTH,
        "height": SYNTH_HEIGHT,
        "count": bands,
        "dtype": dtype,
        "crs": "EPSG:4326",
        "transform": from_origin(SYNTH_WEST, SYNTH_NORTH, SYNTH_RES, SYNTH_RES),
        "nodata": 0,
    }
    plain = path.with_name(path.stem + ".plain.tif") if cog else path
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(pixels)
    if cog:
        rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=256, OVERVIEW_RESAMPLING="AVERAGE")
        plain.unlink()
    return path


@pytest.fixture(scope="session")
def synth_cog(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3-band uint8 COG (with overviews) in EPSG:4326, nodata 0 outside a notched circle."""
    return str(write_synthetic(tmp_path_factory.mktemp("rasters") / "synth.tif"))


@pytest.fixture(scope="session")
def synth_valid() -> np.ndarray:
    return _synthetic_pixels()[1]


@pytest.fixture(scope="session")
def synth_bounds() -> tuple[float, float, float, float]:
    return (
        SYNTH_WEST,
        SYNTH_NORTH - SYNTH_HEIGHT * SYNTH_RES,
        SYNTH_WEST + SYNTH_WIDTH * SYNTH_RES,
        SYNTH_NORTH,
    )


@pytest.fixture(scope="session")
def rgb_byte() -> str:
    if not RGB_BYTE.exists():
        pytest.skip(f"{RGB_BYTE} not available")
    return str(RGB_BYTE)


@pytest.fixture(scope="session")
def shade() -> str:
    if not SHADE.exists():
        pytest.skip(f"{SHADE} not available")
    return str(SHADE)
