"""Artifact storage: a local (or shared, mounted) folder.

Files are always written under a temporary name in the same folder and renamed
when complete, so a reader never sees a partial package.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from core.settings import get_settings

TMP_SUFFIX = ".partial"


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        for sub in ("packages", "work", "exports", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        p = (self.root.joinpath(*parts)).resolve()
        if self.root.resolve() not in p.parents and p != self.root.resolve():
            raise ValueError(f"path escapes storage root: {parts}")
        return p

    @staticmethod
    def temp_path_for(final: Path) -> Path:
        return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")

    @staticmethod
    def publish(tmp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    @staticmethod
    def remove(path: Path) -> int:
        """Delete a file or folder; returns the bytes freed (0 if it was not there)."""
        if path.is_dir():
            freed = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
            return freed
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def usage(self) -> tuple[int, int]:
        """(free, size) bytes of the volume holding the storage."""
        self.root.mkdir(parents=True, exist_ok=True)
        du = shutil.disk_usage(self.root)
        return du.free, du.total


def get_storage() -> Storage:
    s = Storage(get_settings().storage_dir)
    s.ensure()
    return s
