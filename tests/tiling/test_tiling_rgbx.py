"""RGB blocks stored with 4 bytes per pixel (``rgbx_block``) give exactly the bytes of packed RGB blocks."""

from __future__ import annotations

import numpy as np
import pytest

from tiling.render import (
    EncodeOptions,
    _image,
    _reduce2,
    _zero_transparent,
    decode_tile,
    encode_jpeg,
    encode_tile,
    rgbx_block,
)


def _pair(h: int, w: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgbx = rgbx_block(h, w)
    rgbx[...] = packed
    rgbx.base[..., 3] = rng.integers(0, 256, (h, w), dtype=np.uint8)  # the padding byte is never read as data
    return packed, rgbx


def test_rgbx_block_is_an_rgb_view() -> None:
    block = rgbx_block(512, 768)
    assert block.shape == (512, 768, 3) and block.strides == (768 * 4, 4, 1) and block.base.shape == (512, 768, 4)


@pytest.mark.parametrize("window", [(slice(0, 256), slice(0, 256)), (slice(256, 512), slice(512, 768))])
@pytest.mark.parametrize("quality", [75, 85])
def test_jpeg_of_rgbx_tile_is_byte_identical(window: tuple[slice, slice], quality: int) -> None:
    packed, rgbx = _pair(512, 768)
    assert encode_jpeg(rgbx[window], quality) == encode_jpeg(np.ascontiguousarray(packed[window]), quality)


@pytest.mark.parametrize("window", [(slice(0, 256), slice(256, 512)), (slice(256, 512), slice(512, 768))])
def test_png_of_rgbx_tile_is_byte_identical(window: tuple[slice, slice]) -> None:
    packed, rgbx = _pair(512, 768)
    assert _image(rgbx[window]).tobytes() == _image(packed[window]).tobytes()
    opaque = np.ones((256, 256), bool)
    edge = opaque.copy()
    edge[:, 200:] = False
    for alpha in (opaque, edge):
        p = np.ascontiguousarray(packed[window])
        p[~alpha] = 0
        rx = rgbx_block(256, 256)
        rx[...] = p
        assert encode_tile(rx, alpha, EncodeOptions("png")) == encode_tile(p, alpha, EncodeOptions("png"))
        data, fmt = encode_tile(rx, alpha, EncodeOptions("mixed"))
        assert fmt == ("jpeg" if alpha.all() else "png")
        _, a = decode_tile(data)
        assert np.array_equal(a, alpha)


@pytest.mark.parametrize("window", [(slice(None), slice(None)), (slice(0, 256), slice(256, 768))])
def test_reduce2_of_rgbx_matches_packed(window: tuple[slice, slice]) -> None:
    packed, rgbx = _pair(512, 768)
    want = _reduce2(np.ascontiguousarray(packed[window]))
    got = _reduce2(rgbx[window])
    assert np.array_equal(got, want)
    assert got.strides[1:] == (4, 1)  # whole rows are mapped in place and give an RGBX block back
    assert not got.flags.writeable and _reduce2(rgbx[window], writable=True).flags.writeable


def test_zero_transparent_rgbx_and_packed() -> None:
    packed, rgbx = _pair(768, 512)
    alpha = np.ones((768, 512), bool)
    alpha[300:, 100:] = False  # an edge tile, fully transparent tiles and opaque ones
    alpha[10, 10] = False
    _zero_transparent(packed, alpha)
    _zero_transparent(rgbx, alpha)
    assert np.array_equal(rgbx, packed)
    assert not packed[~alpha].any() and packed[alpha].any()
