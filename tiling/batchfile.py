"""Hand-off file between parallel batch renderers and the single GeoPackage writer.

Format (little endian)::

    b"GXBATCH1" | uint32 tile count
    count × ( uint8 zoom | uint32 col | uint32 row | uint8 fmt (0 png, 1 jpeg) | uint32 size | size bytes )
    b"GXEND" | uint32 tile count        (trailer: detects truncated files)

Written to ``<path>.tmp`` then renamed, so a reader never sees a partial file. A batch without any
tile (all empty) is a valid 21-byte file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from tiling.render import EncodedTile

MAGIC = b"GXBATCH1"
TRAILER = b"GXEND"
_COUNT = struct.Struct("<I")
_HEADER = struct.Struct("<BIIBI")
_FMT_CODES = {"png": 0, "jpeg": 1}
_FMT_NAMES = {v: k for k, v in _FMT_CODES.items()}


class BatchFileError(ValueError):
    """The batch file is truncated or not a batch file."""


class BatchFileWriter:
    """Write a batch file tile by tile (``add``), so a renderer need not hold a whole unit's tiles.

    ``with BatchFileWriter(path) as w: w.add(tile) ...``: written to ``path.tmp``, the header count patched
    and the trailer added on a clean exit, fsynced, then renamed to ``path``; on an exception the temporary
    file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.count = 0
        self._f = open(self.tmp, "wb")  # noqa: SIM115 - closed in __exit__
        self._f.write(MAGIC)
        self._f.write(_COUNT.pack(0))

    def add(self, tile: EncodedTile) -> None:
        self._f.write(_HEADER.pack(tile.zoom, tile.col, tile.row, _FMT_CODES[tile.fmt], len(tile.data)))
        self._f.write(tile.data)
        self.count += 1

    def __enter__(self) -> BatchFileWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        f = self._f
        try:
            if exc_type is None:
                f.write(TRAILER)
                f.write(_COUNT.pack(self.count))
                f.seek(len(MAGIC))
                f.write(_COUNT.pack(self.count))
                f.flush()
                os.fsync(f.fileno())
        finally:
            f.close()
            if exc_type is not None:
                self.tmp.unlink(missing_ok=True)
        if exc_type is None:
            try:
                os.replace(self.tmp, self.path)
            except BaseException:
                self.tmp.unlink(missing_ok=True)
                raise


def write_batch_file(path: Path | str, tiles: Iterable[EncodedTile]) -> None:
    """Atomically write ``tiles`` to ``path`` (``path.tmp`` + rename)."""
    with BatchFileWriter(path) as writer:
        for tile in tiles:
            writer.add(tile)


def _read_exact(f, size: int, path: Path) -> bytes:  # noqa: ANN001 - binary file object
    data = f.read(size)
    if len(data) != size:
        raise BatchFileError(f"{path}: truncated batch file")
    return data


def read_batch_file(path: Path | str) -> Iterator[EncodedTile]:
    """Yield the tiles of a batch file (streamed); raise :class:`BatchFileError` if it is damaged."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise BatchFileError(f"{path}: not a geoexport batch file")
        (count,) = _COUNT.unpack(_read_exact(f, _COUNT.size, path))
        for _ in range(count):
            zoom, col, row, fmt, size = _HEADER.unpack(_read_exact(f, _HEADER.size, path))
            if fmt not in _FMT_NAMES:
                raise BatchFileError(f"{path}: unknown tile format code {fmt}")
            yield EncodedTile(zoom, col, row, _read_exact(f, size, path), _FMT_NAMES[fmt])  # type: ignore[arg-type]
        trailer = f.read(len(TRAILER) + _COUNT.size)
        if trailer != TRAILER + _COUNT.pack(count) or f.read(1):
            raise BatchFileError(f"{path}: bad trailer (truncated or corrupted batch file)")
