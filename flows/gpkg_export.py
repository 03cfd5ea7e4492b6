"""The ``gpkg-export`` flow: admission by priority, batch rendering, one GeoPackage, callbacks.

The raster stack (rasterio/GDAL, numpy, Pillow, the ``tiling`` package) is imported inside the functions
that use it, which run in the flow-run process: the runner imports this module only for the flow object
and stays ~65 MB smaller, and the fork server that flow runs start from has it all preloaded anyway
(``flows.warm_start.PRELOAD``).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from core import map_packages
from core.models import JobStatus, TaskStatus
from core.settings import get_settings
from core.storage import Storage
from flows import job_store
from flows.callbacks import send_callbacks

if TYPE_CHECKING:
    from tiling.gpkg import GeoPackageWriter
    from tiling.grid import Batch


class JobAborted(Exception):
    pass


def _io_error_only(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Retry reads that failed on I/O; a bad request or bad data fails at once."""
    from rasterio.errors import RasterioIOError

    try:
        state.result()
    except (OSError, RasterioIOError, TimeoutError):
        return True
    except Exception:
        return False
    return False


@functools.lru_cache(maxsize=8)
def _layer_footprint(job_id: str) -> dict | None:
    """The footprint the job's tiles are clipped to, read once per process.

    Not a task parameter: Prefect walks every parameter looking for futures, on submission and again before
    each run, and hashes it for the cache key — for a footprint of thousands of vertices that cost ~1 CPU-s
    on an 11-task job (measured), and a quoted parameter does not survive the Dask task runner.
    """
    spec = job_store.load(job_id)
    return spec.footprint if spec is not None else None


def batch_file(job_id: str, batch: Batch) -> Path:
    return map_packages.job_work_dir(job_id) / f"{batch.key}.tiles"


# NO_CACHE: a rendered batch lives in its batch file and the job store, never in Prefect's result cache, so
# hashing the inputs (a footprint can hold thousands of vertices) and the task's source for every task is waste
@task(name="render-batch", retries=2, retry_delay_seconds=[1, 4], retry_condition_fn=_io_error_only,
      task_run_name="render-z{batch[zoom]}-{task_id}", cache_policy=NO_CACHE)
def render_batch_task(job_id: str, task_id: str, source: str, batch: dict, tile_format: str,
                      levels: int = 0, clip_bounds: list[float] | None = None) -> int:
    """Read one block of tiles from the layer (and build the ``levels`` coarser zooms above it by
    downsampling), encode them, hand them to the writer as a batch file."""
    from tiling.batchfile import BatchFileWriter
    from tiling.grid import Batch, WorkUnit
    from tiling.render import encode_pool, render_batch

    footprint = _layer_footprint(job_id)
    b = Batch.from_dict(batch)
    unit = WorkUnit(b, levels)
    job_store.mark_task(task_id, TaskStatus.IN_PROGRESS)
    settings = get_settings()
    try:
        # this thread reads and downsamples; the tiles are encoded on the process-wide encode pool, shared by
        # every task of the flow run, so both cores stay busy until the job's last tile
        # tiles stream into the batch file as they are encoded (a unit's tiles are never all held at once)
        with BatchFileWriter(batch_file(job_id, b)) as out:
            render_batch(source, b, tile_format=tile_format, footprint=footprint,
                         jpeg_quality=settings.jpeg_quality, levels=levels, clip_bounds=clip_bounds,
                         pool=encode_pool(), emit=out.add)
    except Exception as exc:
        job_store.mark_task(task_id, TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    job_store.mark_task(task_id, TaskStatus.COMPLETED, done=unit.count, written=out.count)
    return out.count


def open_package(spec: job_store.JobSpec) -> GeoPackageWriter:
    """The job's GeoPackage, under a temporary name until it is published."""
    from tiling.gpkg import GeoPackageWriter

    tmp = Storage.temp_path_for(map_packages.package_path(spec.package_name))
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return GeoPackageWriter(
        tmp, table="tiles", identifier=f"{spec.product_name} {spec.product_version} z0-{spec.zoom}",
        description=f"geoexport map package of layer {spec.layer_id}", tile_bounds=tuple(spec.snapped_bbox),
        zooms=list(range(spec.zoom + 1)),
    )


@task(name="write-geopackage", cache_policy=NO_CACHE)
def write_geopackage_task(job_id: str, writer: GeoPackageWriter) -> dict:
    """Finish the GeoPackage the batches were merged into as they completed (the single writer): the
    footprint layer, then publish it atomically with its sha256 sidecar."""
    from tiling.gpkg import write_sidecar

    # loaded here, not passed in: Prefect would walk the spec's footprint vertex by vertex as a parameter
    spec = job_store.load(job_id)
    assert spec is not None
    final = map_packages.package_path(spec.package_name)
    writer.add_footprint_layer(spec.footprint, {
        "job_id": job_id, "db_id": spec.layer_id, "product": spec.product_name,
        "version": spec.product_version, "max_zoom": spec.zoom,
        "bbox": ",".join(f"{v:.9f}" for v in spec.snapped_bbox),
    })
    writer.close()
    if job_store.status(job_id) != JobStatus.IN_PROGRESS:
        raise JobAborted("job was cancelled before its package was published")
    Storage.publish(writer.path, final)
    side = write_sidecar(final)
    return {"size": side["size"], "sha256": side["sha256"], "tiles": writer.tiles_written}


def _task_runner():  # type: ignore[no-untyped-def]
    """Threads of this process by default; a Dask cluster to spread one big export over machines."""
    s = get_settings()
    if s.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if s.dask_address:
            return DaskTaskRunner(address=s.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": s.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=s.tile_workers)


@flow(name="gpkg-export", task_runner=_task_runner())
def gpkg_export(job_id: str) -> dict:
    logger = get_run_logger()
    settings = get_settings()
    spec = job_store.load(job_id)
    if spec is None:
        raise ValueError(f"map job {job_id} does not exist")
    if spec.status not in (JobStatus.PENDING, JobStatus.IN_PROGRESS):
        logger.info("job=%s is %s, nothing to do", job_id, spec.status.value)
        return {"status": spec.status.value}

    run_id = str(flow_run.get_id() or "") or None
    job_store.mark_queued(job_id, run_id)
    if spec.status == JobStatus.PENDING:
        _wait_for_turn(job_id, settings.gpkg_concurrency)
    attempt = job_store.begin_attempt(job_id, run_id)
    logger.info("job=%s started (attempt %d): zoom 0-%d, %d tiles", job_id, attempt, spec.zoom, spec.tiles_planned)

    try:
        with job_store.Heartbeat(job_id, settings.heartbeat_seconds):
            _check_source(spec.source)
            writer = open_package(spec)
            try:
                _render_all(job_id, spec, writer)
                result = write_geopackage_task(job_id, writer)
            except BaseException:
                writer.abort()  # a partial package is never published; its batch files stay for a retry
                raise
        if not job_store.complete(job_id, result["size"], result["sha256"]):
            raise JobAborted("job was cancelled before completion")
        logger.info("job=%s completed: %d tiles written, %d bytes", job_id, result["tiles"], result["size"])
    except JobAborted as exc:
        logger.warning("job=%s aborted: %s", job_id, exc)
        send_callbacks(job_id)
        return {"status": JobStatus.ABORTED.value}
    except Exception as exc:
        job_store.fail(job_id, f"{type(exc).__name__}: {exc}")
        send_callbacks(job_id)
        raise
    finally:
        job_store.refresh_progress(job_id)
    Storage.remove(map_packages.job_work_dir(job_id))
    send_callbacks(job_id)
    return {"status": JobStatus.COMPLETED.value, **result}


def _check_source(source: str) -> None:
    """Fail at once, with rasterio's reason, when the layer's source cannot be opened at all."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(source):
            pass
    except RasterioIOError as exc:
        raise RasterioIOError(f"the layer's source {source} cannot be read: {exc}") from exc


def _wait_for_turn(job_id: str, limit: int) -> None:
    delay = 0.2
    while not job_store.try_admit(job_id, limit):
        if job_store.status(job_id) != JobStatus.PENDING:
            raise JobAborted("job left the queue before it started")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _render_all(job_id: str, spec: job_store.JobSpec, writer: GeoPackageWriter) -> None:
    """Render every unfinished batch in tasks; merge each batch file into ``writer`` as soon as its task is
    done (in this thread, while the other tasks render), as the one-off CLI streams into its writer."""
    # imported here, in one thread, before the task threads need them: a flow run started as a fresh
    # interpreter (Prefect workers, GEOEXPORT_FLOW_START=spawn) would otherwise import tiling.render, and
    # rio-tiler with it, from two threads at once — which can fail on rio-tiler's circular imports
    import tiling.render  # noqa: F401
    from tiling.batchfile import read_batch_file
    from tiling.grid import Batch, unit_levels

    map_packages.job_work_dir(job_id).mkdir(parents=True, exist_ok=True)
    todo = []
    tasks = job_store.tasks(job_id)
    zooms = [t.zoom for t in tasks]
    for t in tasks:
        b = Batch(t.zoom, t.min_col, t.min_row, t.max_col, t.max_row)
        # a finished batch whose file is still there is reused (a resumed run does not redo it)
        if t.status == TaskStatus.COMPLETED and batch_file(job_id, b).exists():
            writer.write_tiles(read_batch_file(batch_file(job_id, b)))
            continue
        todo.append((str(t.id), b, unit_levels(t.zoom, spec.zoom, zooms)))

    artifact = create_progress_artifact(
        progress=0.0, key=f"gpkg-{job_id}", description=f"tiles rendered for map job {job_id}"
    )
    futures = {
        render_batch_task.submit(job_id, task_id, spec.source, b.to_dict(), spec.tile_format,
                                 levels, list(spec.snapped_bbox)): b
        for task_id, b, levels in todo
    }
    aborted = False
    failure: BaseException | None = None
    last = 0.0
    for fut in as_completed(list(futures)):
        try:
            fut.result()
        except Exception as exc:
            failure = failure or exc
        else:
            if failure is None and not aborted:
                writer.write_tiles(read_batch_file(batch_file(job_id, futures[fut])))
        done, planned = job_store.refresh_progress(job_id)
        pct = 100.0 * done / planned if planned else 100.0
        if pct - last >= 1.0 or done == planned:
            update_progress_artifact(artifact, pct)
            last = pct
        if not aborted and job_store.status(job_id) != JobStatus.IN_PROGRESS:
            aborted = True
            for f in futures:
                f.cancel() if hasattr(f, "cancel") else None
    if aborted:
        raise JobAborted("job was cancelled while rendering")
    if failure is not None:
        raise failure
