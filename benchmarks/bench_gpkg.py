"""geoexport's GeoPackage pipeline against GDAL's own GeoPackage writer, side by side, in one run.

    make bench                          # ~4,300-tile job, PNG and mixed/AUTO, 3 repeats (medians)
    make bench BENCH_ARGS=--large       # + the >= 50,000-tile job (scaling, memory)
    make bench BENCH_ARGS=--e2e         # + the same job through POST /create and the Prefect flow

Every tool gets the same source (an RGBA COG written here, pixel size exactly zoom 14), the same zoom
range (8-14 by default) and the same extent (the raster's bounds). GDAL: ``gdal_translate -of GPKG -co
TILING_SCHEME=InspireCRS84Quad -co TILE_FORMAT=PNG|AUTO`` (zoom 14) then ``gdaladdo -r average 2 4 ... 64``
(zooms 13-8). geoexport: ``geoexport gpkg ... --format png|mixed --min-zoom 8``. JPEG quality 85 for both.
Each output is validated with validate_gpkg.py and compared tile by tile with GDAL's. Peak RSS is the
summed RSS of the process tree, polled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_raster import raster_origin, write_bench_cog, write_mosaic_vrt, zoom_res  # noqa: E402
from bench_tools import (  # noqa: E402
    Comparison,
    compare,
    encode_floor,
    run_measured,
    tile_stats,
    validate,
    work_floor,
)

BIN = Path(sys.executable).parent
ZOOM = 14
MIN_ZOOM = 8
#: (width, height) in px of the two benchmark rasters (zoom 14 pixels)
DEFAULT_SIZE = (17600, 13600)  # ~5,000 tiles planned (~4,400 through the service), ~3,300 stored
#: the large job's source is a VRT mosaic of 4 x 4 copies of the default COG (nothing big is written)
MOSAIC = (4, 4)
LARGE_SIZE = (DEFAULT_SIZE[0] * MOSAIC[0], DEFAULT_SIZE[1] * MOSAIC[1])  # ~78,000 tiles planned over zooms 8-14
MB = 1024 * 1024


def ensure_gdal() -> str:
    """Debian's gdal-bin (installed here if missing); returns ``gdalinfo --version``."""
    if not shutil.which("gdal_translate") or not shutil.which("gdaladdo"):
        print("gdal-bin is missing: apt-get install -y gdal-bin", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "gdal-bin"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Job:
    name: str
    source: Path
    bbox: tuple[float, float, float, float]
    zoom: int = ZOOM
    min_zoom: int = MIN_ZOOM

    @property
    def planned(self) -> int:
        from tiling.grid import plan_pyramid

        return sum(r.count for r in plan_pyramid(self.bbox, self.zoom, self.min_zoom))


def make_job(name: str, size: tuple[int, int], data_dir: Path, mosaic_of: Job | None = None) -> Job:
    """The job over a benchmark source; with ``mosaic_of``, the source is a VRT repeating that job's COG
    side by side (:func:`bench_raster.write_mosaic_vrt`) instead of a newly written raster."""
    width, height = size
    if mosaic_of is not None:
        path = write_mosaic_vrt(data_dir / f"bench-{width}x{height}-z{ZOOM}.vrt", mosaic_of.source, *MOSAIC)
    else:
        path = data_dir / f"bench-{width}x{height}-z{ZOOM}.tif"
    if not path.exists():
        print(f"writing the benchmark raster {path} ({width}x{height} RGBA)...", flush=True)
        t0 = time.perf_counter()
        write_bench_cog(path, width=width, height=height, zoom=ZOOM)
        print(f"  done in {time.perf_counter() - t0:.0f} s, {path.stat().st_size / MB:.0f} MB", flush=True)
    west, north = raster_origin(ZOOM)
    res = zoom_res(ZOOM)
    return Job(name, path, (west, north - height * res, west + width * res, north))


@dataclass
class Result:
    tool: str
    fmt: str
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    size: int = 0
    tiles: int = 0
    kinds: dict = field(default_factory=dict)
    valid: str = "?"
    path: Path | None = None

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def tps(self) -> float:
        return self.tiles / self.wall

    @property
    def peak(self) -> int:
        return max(self.rss)


def run_ours(job: Job, fmt: str, out: Path, workers: int) -> tuple[float, int]:
    out.unlink(missing_ok=True)
    res = zoom_res(job.zoom)
    argv = [str(BIN / "geoexport"), "gpkg", str(job.source), "--bbox", *map(repr, job.bbox),
            "--resolution", repr(res), "-o", str(out), "--format", fmt, "--min-zoom", str(job.min_zoom),
            "--workers", str(workers), "-q"]
    run = run_measured(argv)
    return run.wall, run.peak_rss


def run_gdal(job: Job, fmt: str, out: Path) -> tuple[float, int]:
    out.unlink(missing_ok=True)
    tile_format = {"png": "PNG", "mixed": "AUTO"}[fmt]
    a = run_measured(["gdal_translate", "-q", "-of", "GPKG", "-r", "bilinear",
                      "-co", "TILING_SCHEME=InspireCRS84Quad", "-co", f"TILE_FORMAT={tile_format}",
                      "-co", "QUALITY=85", "-co", "ZLEVEL=6", str(job.source), str(out)])
    levels = [str(2**i) for i in range(1, job.zoom - job.min_zoom + 1)]
    b = run_measured(["gdaladdo", "-q", "-r", "average", "-oo", f"TILE_FORMAT={tile_format}", "-oo", "QUALITY=85",
                      "-oo", "ZLEVEL=6", str(out), *levels])
    return a.wall + b.wall, max(a.peak_rss, b.peak_rss)


def bench_job(job: Job, work: Path, formats: list[str], repeat: int, workers: int, gdal: bool) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for i in range(repeat):
        for fmt in formats:
            tools = ["ours", "gdal"] if gdal else ["ours"]
            for tool in tools:
                key = f"{tool}-{fmt}"
                res = results.setdefault(key, Result(tool, fmt))
                out = work / f"{job.name}-{key}.gpkg"
                wall, rss = (run_ours(job, fmt, out, workers) if tool == "ours" else run_gdal(job, fmt, out))
                res.walls.append(wall)
                res.rss.append(rss)
                res.path = out
                print(f"  [{job.name} run {i + 1}/{repeat}] {key:11s} {wall:7.2f} s  peak RSS {rss / MB:6.0f} MB",
                      flush=True)
    for res in results.values():
        assert res.path is not None
        st = tile_stats(res.path)
        res.tiles, res.kinds, res.size = st["tiles"], st["kinds"], res.path.stat().st_size  # type: ignore[assignment]
        problems = validate(res.path)
        res.valid = "valid" if not problems else "INVALID: " + problems
    return results


def print_table(job: Job, results: dict[str, Result], comparisons: dict[str, Comparison],
                floors: dict[str, tuple[float, int, float | None]]) -> None:
    print(f"\n== {job.name}: {job.source.name}, zooms {job.min_zoom}-{job.zoom}, {job.planned} tiles planned ==")
    print(f"{'run':12s} {'wall s':>8s} {'tiles':>7s} {'tiles/s':>8s} {'peak RSS MB':>11s} {'size MB':>8s}  "
          "kinds / validity")
    for key, r in results.items():
        kinds = ",".join(f"{k}:{v}" for k, v in sorted(r.kinds.items()))
        walls = "/".join(f"{w:.1f}" for w in r.walls)
        print(f"{key:12s} {r.wall:8.2f} {r.tiles:7d} {r.tps:8.1f} {r.peak / MB:11.0f} {r.size / MB:8.2f}  "
              f"{kinds} {r.valid} (runs {walls})")
    for fmt in ("png", "mixed"):
        ours, ref = results.get(f"ours-{fmt}"), results.get(f"gdal-{fmt}")
        if ours and ref:
            print(f"ratio ours/GDAL {fmt:5s}: tiles/s x{ours.tps / ref.tps:.2f}, size x{ours.size / ref.size:.3f}, "
                  f"peak RSS x{ours.peak / ref.peak:.2f}")
        if fmt in comparisons:
            c = comparisons[fmt]
            print(f"pixels vs GDAL {fmt:5s}: {c.common} common tiles, only ours {c.only_ours}, only GDAL {c.only_ref}, "
                  f"MAD mean {c.mean_mad:.2f} worst {c.worst_mad:.2f} (z{c.worst_zoom}), over tolerance "
                  f"{c.over_tol}, alpha mismatch {100 * c.alpha_mismatch:.3f}% -> {'OK' if c.ok() else 'MISMATCH'}")
        if ours and fmt in floors:
            floor, n, work = floors[fmt]
            print(f"encode floor {fmt:5s}: {floor:.2f} s ({n} tiles re-encoded, / cores) -> ours is "
                  f"x{ours.wall / floor:.2f} of the floor")
            if work is not None:
                print(f"  non-encode work {fmt:5s}: {work:.2f} s (read + decode + masks + downsampling, no encoding, "
                      f"/ cores); encode floor + it {floor + work:.2f} s -> ours is x{ours.wall / (floor + work):.2f}")


def summary(job: Job, results: dict[str, Result], comparisons: dict[str, Comparison],
            floors: dict[str, tuple[float, int, float | None]]) -> dict:
    out: dict = {"job": job.name, "planned": job.planned, "zooms": [job.min_zoom, job.zoom], "runs": {}}
    for key, r in results.items():
        out["runs"][key] = {"wall_s": round(r.wall, 3), "walls": [round(w, 3) for w in r.walls], "tiles": r.tiles,
                            "tiles_per_s": round(r.tps, 1), "peak_rss_mb": round(r.peak / MB), "size": r.size,
                            "kinds": r.kinds, "valid": r.valid}
    for fmt, c in comparisons.items():
        out[f"compare_{fmt}"] = c.__dict__
    for fmt, (floor, _n, work) in floors.items():
        if f"ours-{fmt}" in results:
            out[f"floor_{fmt}_s"] = round(floor, 3)
            out[f"floor_ratio_{fmt}"] = round(results[f"ours-{fmt}"].wall / floor, 3)
            if work is not None:
                out[f"non_encode_{fmt}_s"] = round(work, 3)
                out[f"floor_plus_work_ratio_{fmt}"] = round(results[f"ours-{fmt}"].wall / (floor + work), 3)
    return out


def analyse(job: Job, results: dict[str, Result], sample: int | None, cores: int) -> tuple[dict, dict]:
    comparisons, floors = {}, {}
    for fmt in ("png", "mixed"):
        ours, ref = results.get(f"ours-{fmt}"), results.get(f"gdal-{fmt}")
        if ours and ref:
            assert ours.path and ref.path
            # zoom 14 is a pixel-aligned copy (PNG: identical; JPEG q85: codec noise). Lower zooms are 2x2
            # averages in both, but GDAL averages on its dataset's pixel grid, which starts at the raster
            # origin (37 px off the tile lattice here), not on the tile grid: a half-pixel phase shift that
            # shows on sharp features (roads, river) -> a looser tolerance below the finest zoom
            comparisons[fmt] = compare(ours.path, ref.path, tol=3.0, max_zoom=job.zoom, tol_low=8.0, sample=sample)
        if ours and ours.path:
            floor, n = encode_floor(ours.path, cores, sample=sample)
            # the non-encode work of the large job is as slow to time as the job itself: default job only
            work = None if sample else work_floor(job.source, job.bbox, job.zoom, job.min_zoom, fmt, cores)
            floors[fmt] = (floor, n, work)
    return comparisons, floors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="also the >= 50,000-tile job (scaling, memory)")
    ap.add_argument("--large-gdal", action="store_true", help="run GDAL on the large job too (slow: ~30 min)")
    ap.add_argument("--e2e", action="store_true", help="also the same job through the API + Prefect flow")
    ap.add_argument("--no-large-e2e", action="store_true",
                    help="skip the large job through the API + Prefect flow (flow processes' peak RSS)")
    ap.add_argument("--only", choices=["default", "large", "e2e"], help="run only this part")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each measurement on the default job, e2e included (median)")
    ap.add_argument("--formats", default="png,mixed")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-gdal", action="store_true", help="only geoexport (quick iterations)")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench", help="rasters (kept) and outputs")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    gdal_version = ensure_gdal()
    import PIL
    import rasterio

    print(f"geoexport GeoPackage benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}: {cores} cores, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 1024**3:.0f} GiB; {gdal_version} (Debian "
          f"gdal-bin); geoexport: rasterio {rasterio.__version__} / GDAL {rasterio.__gdal_version__}, "
          f"Pillow {PIL.__version__}; workers {args.workers}", flush=True)
    work = args.data_dir
    work.mkdir(parents=True, exist_ok=True)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    report: dict = {"date": time.strftime("%Y-%m-%d"), "cores": cores, "gdal": gdal_version, "jobs": []}
    parts = [args.only] if args.only else ["default"] + ["large"] * args.large + ["e2e"] * args.e2e
    default_job = make_job("default", DEFAULT_SIZE, work)
    if "default" in parts:
        results = bench_job(default_job, work, formats, args.repeat, args.workers, not args.no_gdal)
        comparisons, floors = analyse(default_job, results, None, cores)
        print_table(default_job, results, comparisons, floors)
        report["jobs"].append(summary(default_job, results, comparisons, floors))
    if "large" in parts:
        large = make_job("large", LARGE_SIZE, work, mosaic_of=default_job)
        results = bench_job(large, work, ["mixed"] if not args.large_gdal else formats, 1, args.workers,
                            args.large_gdal and not args.no_gdal)
        comparisons, floors = analyse(large, results, 3000, cores)
        print_table(large, results, comparisons, floors)
        report["jobs"].append(summary(large, results, comparisons, floors))
        small = next((j for j in report["jobs"] if j["job"] == "default"), None)
        if small and "ours-mixed" in small["runs"]:
            a, b = small["runs"]["ours-mixed"], report["jobs"][-1]["runs"]["ours-mixed"]
            print(f"scaling (mixed): {a['tiles']} tiles at {a['tiles_per_s']} tiles/s -> {b['tiles']} tiles at "
                  f"{b['tiles_per_s']} tiles/s (x{b['tiles_per_s'] / a['tiles_per_s']:.2f}); peak RSS "
                  f"{a['peak_rss_mb']} -> {b['peak_rss_mb']} MB")
        if not args.no_large_e2e:
            from bench_e2e import bench_e2e

            report["e2e_large"] = bench_e2e(large, work, args.workers, repeat=1)
    if "e2e" in parts:
        from bench_e2e import bench_e2e

        report["e2e"] = bench_e2e(default_job, work, args.workers, repeat=max(1, args.repeat))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    bad = [r for j in report["jobs"] for r in j["runs"].values() if r["valid"] != "valid"]
    bad += [j[k] for j in report["jobs"] for k in j if k.startswith("compare_") and not Comparison(**j[k]).ok()]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
