"""Direct block reads of tiled, pixel-interleaved 8-bit RGB(A) GeoTIFFs (the usual COG layout).

Why: GDAL splits every TIFF block it decodes into one cached block per band and copies each band out
separately, and the renderer then interleaves the bands again. Read here, a block is inflated (libdeflate,
LZW or Zstandard through imagecodecs, without the GIL) straight into pixel-interleaved RGBA, the layout the
renderer works in (measured on the benchmark COG, one thread: GDAL read + interleave 2.7 CPU-s, this 1.5).
The layout is parsed once per file by tifffile.

Only files whose blocks decode to exactly what GDAL returns are read here (:func:`blocks_for`): a plain
local GeoTIFF, tiled, pixel-interleaved, 8-bit unsigned, photometric RGB with 3 bands, or 4 with the fourth
an unassociated alpha; lossless compression (none, LZW, Deflate, Zstandard) with predictor none or
horizontal; no nodata value and no mask besides the alpha band. Only the full-resolution image is read
here (overviews go through GDAL). Everything else is read by GDAL as before.

Decoded blocks can be kept in one process-wide LRU (``CACHE_BYTES``, off by default: see there) for the
windows of neighbouring reads, which share the source blocks on their borders. The buffer of a block
nobody holds any more (evicted, or never cached) is decoded into again instead of a fresh one, whose every
4 kB page would fault.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from rasterio.enums import ColorInterp, MaskFlags

#: TIFF compressions decoded here (lossless: the bytes are the same whoever decodes them)
_COMPRESSIONS = {1: "none", 5: "lzw", 8: "adobe-deflate", 32946: "deflate", 50000: "zstd"}
_PHOTOMETRIC_RGB = 2
_UNASSOCIATED_ALPHA = 2


@dataclass(frozen=True)
class TiffBlocks:
    """The block layout of one file's full-resolution image."""

    path: str
    key: tuple[str, int, int]
    height: int
    width: int
    samples: int
    block_h: int
    block_w: int
    blocks_across: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    compression: int
    predictor: int

    def read(self, c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
        """Pixels ``[r0:r1, c0:c1]`` as a new (h, w, 4) uint8 RGBA array (RGB sources: the fourth byte is
        left unset). Sparse blocks (no data written) read as 0, as GDAL reads them."""
        out = np.empty((r1 - r0, c1 - c0, 4), np.uint8)
        bh, bw = self.block_h, self.block_w
        with open(self.path, "rb") as fh:
            fd = fh.fileno()
            for by in range(r0 // bh, (r1 - 1) // bh + 1):
                y0, y1 = max(r0, by * bh), min(r1, (by + 1) * bh)
                for bx in range(c0 // bw, (c1 - 1) // bw + 1):
                    x0, x1 = max(c0, bx * bw), min(c1, (bx + 1) * bw)
                    # a block wholly inside this window is not read by any other window of the grid
                    # (windows tile the raster without overlapping): only the blocks on the window's
                    # border are worth caching for the neighbouring reads
                    whole = (x0, y0, x1, y1) == (bx * bw, by * bh, (bx + 1) * bw, (by + 1) * bh)
                    keep = not whole and _CACHE.cache_bytes > 0
                    block, owned = self._block(fd, by * self.blocks_across + bx, keep=keep)
                    dst = out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0, : self.samples]
                    if block is None:
                        dst[...] = 0
                        continue
                    dst[...] = block[y0 - by * bh : y1 - by * bh, x0 - bx * bw : x1 - bx * bw]
                    if owned:
                        _CACHE.give_back(block)
                    del block
        return out

    def _block(self, fd: int, index: int, keep: bool = True) -> tuple[np.ndarray | None, bool]:
        """Block ``index`` decoded, from the cache or read and decoded (then cached if ``keep``), and whether
        the caller owns it (decoded, not cached: nobody else can see it; to hand back with
        :meth:`_BlockCache.give_back` once copied)."""
        cached = _CACHE.get((self.key, index))
        if cached is not None:
            return cached, False
        offset, count = self.offsets[index], self.counts[index]
        if not offset or not count:
            return None, False
        data = os.pread(fd, count, offset)
        if len(data) != count:
            raise OSError(f"{self.path}: block {index} is truncated ({len(data)} of {count} bytes)")
        block = _CACHE.take_buffer((self.block_h, self.block_w, self.samples))
        flat = block.reshape(-1)
        if self.compression == 1:
            got = len(data)
            if got == flat.size:
                flat[:] = np.frombuffer(data, np.uint8)
        elif self.compression == 5:
            got = len(imagecodecs.lzw_decode(data, out=flat))
        elif self.compression == 50000:
            got = len(imagecodecs.zstd_decode(data, out=flat))
        else:
            got = len(imagecodecs.deflate_decode(data, out=flat))
        if got != flat.size:
            raise OSError(f"{self.path}: block {index} decodes to {got} bytes, not {flat.size}")
        if self.predictor == 2:  # horizontal differencing, per sample, along each row
            imagecodecs.delta_decode(block, axis=1, out=block)
        if keep:
            _CACHE.put((self.key, index), block)
        return block, not keep


class _BlockCache:
    """A byte-bounded LRU of decoded blocks shared by the render threads of a process."""

    def __init__(self, cache_bytes: int) -> None:
        self.cache_bytes = cache_bytes
        self._blocks: collections.OrderedDict[Any, np.ndarray] = collections.OrderedDict()
        self._free: list[np.ndarray] = []
        self._size = 0
        self._lock = threading.Lock()

    def take_buffer(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A buffer to decode a block into: a recycled one of that shape, else a new one."""
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.shape == shape:
                    return self._free.pop(i)
        return np.empty(shape, np.uint8)

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
            return block

    def give_back(self, block: np.ndarray) -> None:
        """Recycle a decoded block its caller owns (see :meth:`TiffBlocks._block`)."""
        with self._lock:
            if len(self._free) < 8:
                self._free.append(block)

    def put(self, key: Any, block: np.ndarray) -> None:
        with self._lock:
            if key in self._blocks:
                return
            self._blocks[key] = block
            self._size += block.nbytes
            while self._size > self.cache_bytes and self._blocks:
                _, old = self._blocks.popitem(last=False)
                self._size -= old.nbytes
                # recycled only if no reader holds it (readers take their references under this lock, so
                # none can appear later): here, `old` and getrefcount's argument
                if sys.getrefcount(old) == 2 and len(self._free) < 8:
                    self._free.append(old)
                del old

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._free.clear()
            self._size = 0


#: Decoded blocks kept between reads (bytes); only blocks on a read window's border are worth it (the
#: inner ones are not read again). Off: on the benchmark job (945 source blocks, read windows 37/21 px off
#: the block grid, 2 render threads) there is no reuse below ~48 MB (1,424 decodes with 16 MB, 1,376 with
#: 24, 1,154 with 48, 1,085 with 64), and 48 MB saved ~0.4 CPU-s of 18 but took the service's flow
#: processes from 438 to 492 MB summed PSS on that job: too close to the 500 MB budget for large COG jobs.
#: GDAL's own reads keep no blocks either (see tiling.render.GDAL_CACHEMAX).
CACHE_BYTES = 0
_CACHE = _BlockCache(CACHE_BYTES)
_LAYOUTS: dict[tuple[str, int, int], TiffBlocks | None] = {}
_LAYOUTS_LOCK = threading.Lock()


def blocks_for(src: Any, indexes: list[int]) -> TiffBlocks | None:
    """The direct reader of the open rasterio dataset ``src`` (full resolution, reading bands ``indexes``),
    or ``None`` when it does not qualify (see the module docstring). Cached per file version."""
    path = src.name
    if src.driver != "GTiff" or not isinstance(path, str) or not os.path.isfile(path):
        return None
    if not _bands_qualify(src, indexes):
        return None
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    with _LAYOUTS_LOCK:
        if key in _LAYOUTS:
            return _LAYOUTS[key]
    layout = _layout(path, key, src)
    with _LAYOUTS_LOCK:
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def _bands_qualify(src: Any, indexes: list[int]) -> bool:
    if src.count not in (3, 4) or indexes != [1, 2, 3] or any(dt != "uint8" for dt in src.dtypes):
        return False
    if src.nodata is not None:
        return False
    if src.count == 3:
        return all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums)
    return src.colorinterp[3] == ColorInterp.alpha and all(
        set(flags) == {MaskFlags.per_dataset, MaskFlags.alpha} for flags in src.mask_flag_enums[:3]
    )


def _layout(path: str, key: tuple[str, int, int], src: Any) -> TiffBlocks | None:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if not isinstance(page, tifffile.TiffPage):
                return None
            extrasamples = tuple(int(e) for e in page.extrasamples)
            if not (
                page.is_tiled
                and page.tiledepth == 1
                and int(page.planarconfig) == 1
                and page.bitspersample == 8
                and int(page.sampleformat) == 1
                and int(page.photometric) == _PHOTOMETRIC_RGB
                and int(page.compression) in _COMPRESSIONS
                and int(page.predictor) in (1, 2)
                and int(page.fillorder) == 1
                and page.samplesperpixel == src.count
                and extrasamples == (() if src.count == 3 else (_UNASSOCIATED_ALPHA,))
                and page.shape[:2] == (src.height, src.width)
            ):
                return None
            orientation = page.tags.get("Orientation")
            if orientation is not None and orientation.value != 1:
                return None
            return TiffBlocks(
                path=path,
                key=key,
                height=page.imagelength,
                width=page.imagewidth,
                samples=page.samplesperpixel,
                block_h=page.tilelength,
                block_w=page.tilewidth,
                blocks_across=-(-page.imagewidth // page.tilewidth),
                offsets=tuple(page.dataoffsets),
                counts=tuple(page.databytecounts),
                compression=int(page.compression),
                predictor=int(page.predictor),
            )
    except Exception:  # noqa: BLE001 - anything tifffile cannot make sense of is left to GDAL
        return None
