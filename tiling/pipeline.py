"""One-off export pipeline: plan → render work units in parallel → single GeoPackage writer → sidecar.

Used by the ``geoexport gpkg`` CLI and the benchmarks; the Prefect flow calls the same pieces itself
(``plan_units``, ``render_batch`` + ``BatchFileWriter``, ``GeoPackageWriter``). A work unit reads one
block of the finest zoom and builds the coarser zooms above it by downsampling in memory
(:class:`tiling.grid.WorkUnit`); zooms below a unit's pyramid are planned the same way, one level group
after the other, each group's finest zoom read from the source (its overviews for the coarse groups).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import shapely
from shapely.geometry import mapping

from tiling.gpkg import GeoPackageWriter, write_sidecar
from tiling.grid import UNITS_PER_BATCH, WorkUnit, plan_units, snap_bbox
from tiling.render import EncodedTile, OutputFormat, Resampling, encode_pool, render_batch

ExecutorKind = Literal["thread", "process"]
#: Threads were measured faster than processes on the reference 2-core machine (GDAL, numpy and the tile
#: encoders release the GIL; processes pay for pickling every encoded tile back to the parent).
DEFAULT_EXECUTOR: ExecutorKind = "thread"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    tiles_planned: int
    tiles_written: int
    file_size: int
    sha256: str
    zooms: list[int] = field(default_factory=list)
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


def partial_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial")


def _make_executor(kind: ExecutorKind, workers: int) -> cf.Executor:
    if kind == "thread":
        return cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
    if kind == "process":
        # never fork a process that may run GDAL or other threads: use a clean forkserver
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tiling.render"])
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    raise ValueError(f"executor must be 'thread' or 'process', got {kind!r}")


def render_batches(
    render: Callable[[WorkUnit], list[EncodedTile]],
    batches: list[WorkUnit],
    *,
    workers: int,
    executor: ExecutorKind = DEFAULT_EXECUTOR,
) -> Iterator[tuple[WorkUnit, list[EncodedTile]]]:
    """Yield ``(unit, tiles)`` as units complete; at most ``workers + 1`` units are in flight."""
    if workers <= 1:
        for batch in batches:
            yield batch, render(batch)
        return
    pool = _make_executor(executor, workers)
    pending: dict[cf.Future[list[EncodedTile]], WorkUnit] = {}
    todo = iter(batches)
    try:
        for batch in todo:
            pending[pool.submit(render, batch)] = batch
            if len(pending) >= workers + 1:
                break
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                batch = pending.pop(future)
                yield batch, future.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending[pool.submit(render, nxt)] = nxt
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class _Aborted(Exception):
    pass


def stream_units(
    render: Callable[..., list[EncodedTile]], units: list[WorkUnit], *, workers: int, flush_tiles: int = 256
) -> Iterator[tuple[WorkUnit | None, list[EncodedTile]]]:
    """Render ``units`` on ``workers`` threads, streaming: yields ``(None, tiles)`` as tiles are encoded (in
    groups of up to ``flush_tiles``) and ``(unit, [])`` when a unit is finished (after all its tiles).

    ``render(unit, emit=...)`` must hand every tile to ``emit``. Tiles pass through a bounded queue, so
    neither a unit's tiles nor the whole job's are ever held at once (memory does not grow with the unit
    size); a failure in any unit stops the others and is raised here.
    """
    tiles_q: queue.Queue[Any] = queue.Queue(maxsize=2 * flush_tiles)
    aborted = threading.Event()

    def emit(tile: EncodedTile) -> None:
        if aborted.is_set():
            raise _Aborted
        tiles_q.put(tile)

    def run(unit: WorkUnit) -> None:
        try:
            render(unit, emit=emit)
            tiles_q.put(("done", unit, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            tiles_q.put(("done", unit, exc))

    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
    todo, active, buf = iter(units), 0, []
    try:
        for unit in todo:
            pool.submit(run, unit)
            active += 1
            if active >= workers:
                break
        while active:
            item = tiles_q.get()
            if isinstance(item, EncodedTile):
                buf.append(item)
                if len(buf) >= flush_tiles:
                    yield None, buf
                    buf = []
                continue
            _, unit, exc = item
            active -= 1
            if exc is not None:
                raise exc
            nxt = next(todo, None)
            if nxt is not None:
                pool.submit(run, nxt)
                active += 1
            if buf:
                yield None, buf
                buf = []
            yield unit, []
    finally:
        aborted.set()
        while active:  # unblock and collect the renders still running
            item = tiles_q.get()
            if isinstance(item, tuple):
                active -= 1
        pool.shutdown(wait=True)


def _render_unit(source: str, unit: WorkUnit, **kwargs: Any) -> list[EncodedTile]:
    return render_batch(source, unit.batch, levels=unit.levels, **kwargs)


def _footprint_properties(
    metadata: Mapping[str, Any] | None, extra: Mapping[str, str | int | float]
) -> dict[str, str | int | float]:
    props: dict[str, str | int | float] = {}
    for key, value in (metadata or {}).items():
        if isinstance(value, bool):
            props[str(key)] = int(value)
        elif isinstance(value, str | int | float):
            props[str(key)] = value
        elif value is not None:
            props[str(key)] = json.dumps(value, sort_keys=True, default=str)
    props.update(extra)
    return props


def export_gpkg(
    source: str,
    bbox: Iterable[float],
    max_zoom: int,
    out_path: Path | str,
    *,
    min_zoom: int = 0,
    tile_format: OutputFormat = "mixed",
    batch_tiles: int = 256,
    unit_tiles: int | None = None,
    workers: int = 2,
    footprint: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    resampling: Resampling = "bilinear",
    jpeg_quality: int = 85,
    identifier: str | None = None,
    executor: ExecutorKind = DEFAULT_EXECUTOR,
) -> ExportResult:
    """Export ``source`` over ``bbox`` (EPSG:4326, already clipped by the caller) to a GeoPackage.

    Every zoom ``0..max_zoom`` is declared in ``gpkg_tile_matrix``; tiles are rendered for
    ``min_zoom..max_zoom``. The package is built as ``<out_path>.partial`` and renamed to ``out_path``
    only when complete; on any error the partial file is removed and the exception propagates.
    ``progress(done_tiles, planned_tiles)`` is called after each batch (empty tiles count as done).
    ``unit_tiles``: finest-zoom tiles per work unit (default ``UNITS_PER_BATCH * batch_tiles``, as the
    service plans map jobs; see :func:`tiling.grid.plan_units`).
    """
    out_path = Path(out_path)
    box = tuple(float(v) for v in bbox)
    ranges, units = plan_units(box, max_zoom, min_zoom, batch_tiles,
                               UNITS_PER_BATCH * batch_tiles if unit_tiles is None else unit_tiles)
    planned = sum(r.count for r in ranges)
    bounds = snap_bbox(box, max_zoom)
    zooms = list(range(0, max_zoom + 1))
    tmp = partial_path(out_path)
    tmp.unlink(missing_ok=True)
    render = partial(
        _render_unit,
        source,
        # units are read by `workers` threads; their tiles are encoded on the shared encode pool (processes
        # encode their own units inline)
        pool=encode_pool() if executor == "thread" and workers > 1 else None,
        tile_format=tile_format,
        resampling=resampling,
        jpeg_quality=jpeg_quality,
        footprint=footprint,
        clip_bounds=bounds,
    )
    writer: GeoPackageWriter | None = None
    try:
        writer = GeoPackageWriter(
            tmp,
            identifier=identifier or out_path.stem,
            description=f"Tiles of {Path(source).name}, zoom {min_zoom}-{max_zoom}",
            tile_bounds=bounds,
            zooms=zooms,
            metadata=metadata,
        )
        done = 0
        if progress:
            progress(0, planned)
        if executor == "thread" and workers > 1:
            stream = stream_units(render, units, workers=workers)
        else:
            stream = render_batches(render, units, workers=workers, executor=executor)
        for finished, tiles in stream:
            writer.write_tiles(tiles)
            if finished is not None:
                done += finished.count
                if progress:
                    progress(done, planned)
        geometry = footprint if footprint is not None else mapping(shapely.box(*bounds))
        writer.add_footprint_layer(
            geometry,
            _footprint_properties(
                metadata,
                {
                    "min_zoom": min_zoom,
                    "max_zoom": max_zoom,
                    "tile_format": tile_format,
                    "tiles": writer.tiles_written,
                    "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                },
            ),
        )
        written = writer.tiles_written
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        if writer is not None:
            writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    sidecar = write_sidecar(out_path)
    return ExportResult(
        path=out_path,
        tiles_planned=planned,
        tiles_written=written,
        file_size=sidecar["size"],
        sha256=sidecar["sha256"],
        zooms=zooms,
        bounds=bounds,
    )
