from __future__ import annotations

from pathlib import Path

import pytest

from tiling.batchfile import BatchFileError, read_batch_file, write_batch_file
from tiling.render import EncodedTile

TILES = [
    EncodedTile(14, 100, 20, b"\x89PNG" + bytes(range(256)) * 3, "png"),
    EncodedTile(14, 101, 20, b"\xff\xd8\xff" + b"x" * 1000, "jpeg"),
    EncodedTile(30, 2**31 - 1, 2**30 - 1, b"", "png"),
]


def test_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "z14.batch"
    write_batch_file(path, TILES)
    assert list(read_batch_file(path)) == TILES
    assert not (tmp_path / "z14.batch.tmp").exists()


def test_empty_batch(tmp_path: Path) -> None:
    path = tmp_path / "empty.batch"
    write_batch_file(path, [])
    assert path.exists()
    assert list(read_batch_file(path)) == []


def test_overwrite_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "b.batch"
    write_batch_file(path, TILES)
    write_batch_file(path, TILES[:1])
    assert list(read_batch_file(path)) == TILES[:1]


def test_damaged_files(tmp_path: Path) -> None:
    path = tmp_path / "b.batch"
    write_batch_file(path, TILES)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(BatchFileError):
        list(read_batch_file(path))
    path.write_bytes(data[:40])
    with pytest.raises(BatchFileError):
        list(read_batch_file(path))
    path.write_bytes(b"something else entirely")
    with pytest.raises(BatchFileError):
        list(read_batch_file(path))


def test_streamed_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    from tiling.batchfile import BatchFileWriter

    path = tmp_path / "b.tiles"
    with pytest.raises(RuntimeError), BatchFileWriter(path) as writer:
        writer.add(TILES[0])
        raise RuntimeError("render failed")
    assert not path.exists() and not list(tmp_path.iterdir())
    with BatchFileWriter(path) as writer:
        for tile in TILES:
            writer.add(tile)
    assert list(read_batch_file(path)) == list(TILES) and writer.count == len(TILES)
