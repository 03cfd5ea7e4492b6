"""Helpers of the GeoPackage benchmark: measured subprocesses, GeoPackage checks, tile comparison."""

from __future__ import annotations

import io
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

_PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------ processes


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces/parentheses: fields after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size (bytes): each shared page counted once across the processes sharing it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


class RssPoller:
    """Poll the memory of a process tree in a thread (bytes, maxima over the polls):

    - ``peak``: summed RSS of the tree (pages shared between processes — libraries, a fork server's
      pre-imported modules — counted once per process that maps them);
    - ``peak_pss``: summed PSS of the tree (shared pages split between their sharers: what the tree takes);
    - ``peak_process``: RSS of the largest single process of the tree.
    """

    def __init__(self, root: int, interval: float = 0.1, pss: bool = False) -> None:
        self.root, self.interval, self.pss = root, interval, pss
        self.peak = self.peak_pss = self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = process_tree(self.root)
            rss = [_rss(pid) for pid in pids]
            self.peak = max(self.peak, sum(rss))
            self.peak_process = max(self.peak_process, max(rss, default=0))
            if self.pss:
                self.peak_pss = max(self.peak_pss, sum(_pss(pid) for pid in pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    wall: float
    peak_rss: int
    stdout: str
    cpu: float = 0.0  # user + system CPU seconds of the process and the children it waited for


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run ``argv``; wall time and the peak summed RSS of its process tree (polled every 0.1 s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    with RssPoller(proc.pid) as poll:
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, poll.peak, out.decode(), cpu)


# ----------------------------------------------------------------------------------------- geopackages


def validate(path: Path) -> str:
    """GDAL's validate_gpkg.py (gdal-utils); returns '' when valid, else its output."""
    out = subprocess.run(
        [sys.executable, "-m", "osgeo_utils.samples.validate_gpkg", str(path)], capture_output=True, text=True
    )
    return "" if out.returncode == 0 else (out.stdout + out.stderr).strip()[-2000:]


def tiles_table(con: sqlite3.Connection) -> str:
    (name,) = con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'tiles'").fetchone()
    return name


def tile_index(path: Path) -> dict[tuple[int, int, int], int]:
    """``(zoom, col, row) -> rowid`` of every stored tile."""
    con = sqlite3.connect(path)
    try:
        table = tiles_table(con)
        rows = con.execute(f'SELECT id, zoom_level, tile_column, tile_row FROM "{table}"')
        return {(z, c, r): i for i, z, c, r in rows}
    finally:
        con.close()


def tile_stats(path: Path) -> dict[str, object]:
    con = sqlite3.connect(path)
    try:
        table = tiles_table(con)
        kinds: Counter[str] = Counter()
        for (head,) in con.execute(f'SELECT substr(tile_data, 1, 4) FROM "{table}"'):
            kinds["png" if head[:4] == b"\x89PNG" else "jpeg" if head[:2] == b"\xff\xd8" else "other"] += 1
        zooms = dict(con.execute(f'SELECT zoom_level, count(*) FROM "{table}" GROUP BY zoom_level'))
        return {"tiles": sum(kinds.values()), "kinds": dict(kinds), "per_zoom": zooms}
    finally:
        con.close()


def _decode(blob: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(blob))
    img.load()
    return np.asarray(img.convert("RGBA"))


@dataclass
class Comparison:
    common: int
    only_ours: int
    only_ref: int
    worst_mad: float
    mean_mad: float
    worst_zoom: int
    over_tol: int
    alpha_mismatch: float

    def ok(self) -> bool:
        return self.only_ours == 0 and self.only_ref == 0 and self.over_tol == 0


def compare(ours: Path, ref: Path, tol: float, max_zoom: int, tol_low: float, sample: int | None = None) -> Comparison:
    """Mean absolute RGB difference per tile over pixels opaque in both, for tiles stored in both files.

    ``tol`` applies at ``max_zoom``, ``tol_low`` below, and only to tiles at least 1% opaque in both.
    ``alpha_mismatch``: fraction of pixels opaque in exactly one of the two (all compared tiles).
    """
    a_idx, b_idx = tile_index(ours), tile_index(ref)
    common = sorted(set(a_idx) & set(b_idx))
    keys = common
    if sample and len(common) > sample:
        rng = np.random.default_rng(0)
        keys = [common[i] for i in sorted(rng.choice(len(common), sample, replace=False))]
    ca, cb = sqlite3.connect(ours), sqlite3.connect(ref)
    ta, tb = tiles_table(ca), tiles_table(cb)
    worst, worst_zoom, total, over, mism, npx = 0.0, -1, 0.0, 0, 0, 0
    try:
        for key in keys:
            (blob_a,) = ca.execute(f'SELECT tile_data FROM "{ta}" WHERE id=?', (a_idx[key],)).fetchone()
            (blob_b,) = cb.execute(f'SELECT tile_data FROM "{tb}" WHERE id=?', (b_idx[key],)).fetchone()
            pa, pb = _decode(blob_a), _decode(blob_b)
            va, vb = pa[..., 3] > 0, pb[..., 3] > 0
            both = va & vb
            mism += int(np.count_nonzero(va ^ vb))
            npx += va.size
            if not both.any():
                continue
            mad = float(np.abs(pa[..., :3].astype(np.int16) - pb[..., :3].astype(np.int16))[both].mean())
            total += mad
            if mad > worst:
                worst, worst_zoom = mad, key[0]
            # slivers (< 1% of the tile opaque in both) are too small for a meaningful mean
            if both.mean() >= 0.01 and mad > (tol if key[0] == max_zoom else tol_low):
                over += 1
    finally:
        ca.close()
        cb.close()
    return Comparison(
        common=len(common),
        only_ours=len(set(a_idx) - set(b_idx)),
        only_ref=len(set(b_idx) - set(a_idx)),
        worst_mad=worst,
        mean_mad=total / max(1, len(keys)),
        worst_zoom=worst_zoom,
        over_tol=over,
        alpha_mismatch=mism / max(1, npx),
    )


def encode_floor(path: Path, cores: int, sample: int | None = None) -> tuple[float, int]:
    """Seconds to only encode the tiles of ``path`` again with geoexport's codec settings, over ``cores``.

    Every stored tile is decoded (not timed) and re-encoded with ``tiling.render.encode_tile`` in the same
    format it was stored in (JPEG stays JPEG, PNG stays PNG, RGB stays RGB); the single-thread time is
    divided by ``cores``. With ``sample``, a random sample is timed and scaled to the whole file.
    """
    from tiling.render import EncodeOptions, encode_tile

    con = sqlite3.connect(path)
    try:
        table = tiles_table(con)
        ids = [i for (i,) in con.execute(f'SELECT id FROM "{table}"')]
        n_all = len(ids)
        if sample and n_all > sample:
            rng = np.random.default_rng(1)
            ids = sorted(int(i) for i in rng.choice(ids, sample, replace=False))
        spent = 0.0
        for i in ids:
            (blob,) = con.execute(f'SELECT tile_data FROM "{table}" WHERE id=?', (i,)).fetchone()
            img = Image.open(io.BytesIO(blob))
            img.load()
            arr = np.asarray(img)
            if img.format == "JPEG":
                pixels, alpha, opts = arr, np.ones(arr.shape[:2], bool), EncodeOptions("jpeg")
            elif arr.ndim == 3 and arr.shape[2] == 4:
                pixels, alpha, opts = arr[..., :3], arr[..., 3] > 0, EncodeOptions("png")
            else:
                pixels, alpha, opts = arr, np.ones(arr.shape[:2], bool), EncodeOptions("png")
            pixels = np.ascontiguousarray(pixels)
            t0 = time.perf_counter()
            encode_tile(pixels, alpha, opts)
            spent += time.perf_counter() - t0
    finally:
        con.close()
    return spent * n_all / max(1, len(ids)) / cores, n_all


def work_floor(source: Path, bbox: tuple[float, float, float, float], zoom: int, min_zoom: int, fmt: str,
               cores: int) -> float:
    """Seconds (CPU of one thread, divided over ``cores``) of everything geoexport's pipeline does *besides*
    encoding, on the same job: reading and decoding the source, masks, interleaving, 2×2 downsampling.

    The pipeline's own code runs with an encoder that drops its tiles instead of encoding them (internal
    API, on purpose: the point is to time exactly the work that is not encoding). The encode floor plus this
    is the least time the job can take on ``cores`` cores with this source and these codecs.
    """
    from tiling import render
    from tiling.grid import UNITS_PER_BATCH, plan_units, snap_bbox

    class _DropTiles(render._Encoder):
        encode = staticmethod(lambda pixels, alpha, options: (b"", "png"))

    _, units = plan_units(bbox, zoom, min_zoom, 256, UNITS_PER_BATCH * 256)
    encoder = _DropTiles(render.EncodeOptions(fmt), None, lambda tile: None)  # type: ignore[arg-type]
    clip = snap_bbox(bbox, zoom)
    t0 = time.process_time()
    for unit in units:
        render._render(str(source), unit.batch, encoder, resampling="bilinear", rescale=None, footprint=None,
                       clip_bounds=clip, levels=unit.levels)
    return (time.process_time() - t0) / cores
