"""Map-package requests: validation against the catalog, the naive cache, planning, launch."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shapely.geometry import box, shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import BadRequest, Conflict, Forbidden, InsufficientStorage, NotFound, ServiceUnavailable
from api.schemas.map_jobs import (
    CallbackAttemptOut,
    CreateGpkgJobResponse,
    ExportGetMap,
    JobOut,
    NaiveCacheJobResponse,
    TaskOut,
    TileCounts,
)
from core import map_packages
from core.launch import LaunchError, launch, queue_for_priority
from core.models import JobStatus, Layer, MapJob, MapJobTask, TaskStatus
from core.models.map_jobs import ACTIVE_STATUSES
from core.settings import get_settings
from core.storage import get_storage
from core.tokens import Principal
from tiling.grid import UNITS_PER_BATCH, estimate_package_bytes, plan_units, tile_range, zoom_for_resolution

log = logging.getLogger("geoexport.map_jobs")


def _now() -> datetime:
    return datetime.now(UTC)


def create_job(session: Session, req: ExportGetMap, owner: str
               ) -> CreateGpkgJobResponse | NaiveCacheJobResponse:
    settings = get_settings()
    layer = session.get(Layer, req.dbId)
    if layer is None:
        raise NotFound(f"layer {req.dbId} not found in the catalog")

    try:
        zoom = zoom_for_resolution(req.targetResolution, max_zoom=settings.max_zoom)
    except ValueError as exc:
        raise BadRequest(f"targetResolution is out of range: {exc}") from exc
    if zoom > layer.max_zoom:
        raise BadRequest(
            f"targetResolution {req.targetResolution} is finer than the layer's own resolution "
            f"{layer.max_resolution:.10g} (its finest zoom is {layer.max_zoom}, the request needs {zoom})"
        )

    footprint = shape(layer.footprint)
    clipped = footprint.intersection(box(*req.bbox))
    if clipped.is_empty or clipped.area == 0:
        raise BadRequest(
            f"bbox {req.bbox} is outside the layer footprint (layer bounds {[round(b, 6) for b in layer.bounds]})"
        )
    clip_bbox = clipped.bounds
    top = tile_range(clip_bbox, zoom)
    key = map_packages.cache_key(layer.id, req.crs, zoom, (top.min_col, top.min_row, top.max_col, top.max_row))

    hit = _cache_lookup(session, key, req, owner)
    if hit is not None:
        return hit

    # work units: blocks of the finest zoom that also build the coarser zooms above them (tiling.grid)
    ranges, units = plan_units(clip_bbox, zoom, 0, settings.batch_tiles,
                               settings.unit_tiles or UNITS_PER_BATCH * settings.batch_tiles)
    estimated = estimate_package_bytes(ranges)
    free, _size = get_storage().usage()
    if estimated > free:
        raise InsufficientStorage(
            f"the package needs about {estimated} bytes but only {free} bytes are free on the package volume"
        )

    job_id = uuid.uuid4()
    job = MapJob(
        id=job_id,
        layer_id=layer.id,
        cache_key=key,
        status=JobStatus.PENDING,
        bbox=list(req.bbox),
        snapped_bbox=list(top.bounds),
        target_resolution=req.targetResolution,
        crs=req.crs,
        zoom=zoom,
        priority=req.priority,
        tile_format=settings.tile_format,
        callback_urls=list(req.callbackURLs),
        owner=owner,
        tiles_planned=sum(r.count for r in ranges),
        estimated_bytes=estimated,
        package_name=map_packages.make_package_name(layer.product_id, layer.product_version, zoom, job_id),
    )
    job.tasks = [
        MapJobTask(
            id=uuid.uuid4(), seq=i, zoom=b.zoom, min_col=b.min_col, min_row=b.min_row,
            max_col=b.max_col, max_row=b.max_row, tiles_planned=u.count,
        )
        for i, u in enumerate(units)
        for b in (u.batch,)
    ]
    session.add(job)
    session.commit()

    _start_flow(session, job, "the job was recorded but could not be started")
    log.info("map job created job=%s layer=%s zoom=%d tiles=%d flow_run=%s",
             job_id, layer.id, zoom, job.tiles_planned, job.flow_run_id)
    return CreateGpkgJobResponse(id=job_id, taskIds=[t.id for t in job.tasks])


def _start_flow(session: Session, job: MapJob, failure: str) -> None:
    """Launch the job's gpkg-export flow run; a launch that fails leaves the job Failed (503)."""
    attempt = "" if job.attempts == 0 else f"-retry{job.attempts + 1}"
    try:
        job.flow_run_id = launch(
            get_settings().gpkg_deployment,
            {"job_id": str(job.id)},
            flow_run_name=f"gpkg-{job.package_name}{attempt}",
            tags=["gpkg", f"priority-{job.priority}"] + (["retry"] if attempt else []),
            work_queue_name=queue_for_priority(job.priority),
            idempotency_key=f"gpkg-{job.id}{attempt}",
        )
    except LaunchError as exc:
        job.status = JobStatus.FAILED
        job.error_reason = str(exc)
        session.commit()
        raise ServiceUnavailable(f"{failure}: {exc}") from exc
    session.commit()


def _share(job: MapJob, subject: str) -> None:
    if subject != job.owner and subject not in job.shared_with:
        job.shared_with = [*job.shared_with, subject]


def _cache_lookup(session: Session, key: str, req: ExportGetMap, subject: str
                  ) -> CreateGpkgJobResponse | NaiveCacheJobResponse | None:
    now = _now()
    candidates = session.scalars(
        select(MapJob)
        .where(MapJob.cache_key == key, MapJob.status.in_([JobStatus.COMPLETED, *ACTIVE_STATUSES]))
        .order_by(MapJob.created_at.desc())
        .with_for_update()
    ).all()
    for job in candidates:
        if job.status == JobStatus.COMPLETED:
            if job.expires_at is None or job.expires_at <= now:
                continue
            if not map_packages.package_path(job.package_name).exists():
                continue
            ttl = timedelta(days=get_settings().package_ttl_days)
            job.expires_at = max(job.expires_at, now + ttl)
            _share(job, subject)
            session.commit()
            log.info("naive cache hit job=%s", job.id)
            p = map_packages.job_payload(job)
            return NaiveCacheJobResponse(
                fileUri=p["fileUri"], expirationTime=job.expires_at, fileSize=job.file_size or 0,
                dbId=job.layer_id, packageName=job.package_name, bbox=req.bbox,
                targetResolution=req.targetResolution, requestId=str(job.id), success=True,
            )
        # identical request still running: hand back that job and merge the callback URLs
        merged = list(dict.fromkeys([*job.callback_urls, *req.callbackURLs]))
        if merged != job.callback_urls:
            job.callback_urls = merged
        _share(job, subject)
        session.commit()
        log.info("joined running job=%s", job.id)
        return CreateGpkgJobResponse(id=job.id, taskIds=[t.id for t in job.tasks])
    return None


def get_job(session: Session, job_id: uuid.UUID, who: Principal, *, manage: bool = False) -> MapJob:
    """The job, if ``who`` may see it (owner, a subject it was shared with through the cache, or an admin).

    Only the owner or an admin may ``manage`` (cancel or delete) it.
    """
    job = session.get(MapJob, job_id)
    if job is None:
        raise NotFound(f"map job {job_id} not found")
    allowed = who.is_admin or who.subject == job.owner or (not manage and who.subject in job.shared_with)
    if not allowed:
        raise Forbidden(f"map job {job_id} belongs to another user")
    return job


def describe(job: MapJob) -> JobOut:
    percentage = 100.0 if job.status == JobStatus.COMPLETED else (
        round(100.0 * job.tiles_done / job.tiles_planned, 1) if job.tiles_planned else 0.0
    )
    completed = job.status == JobStatus.COMPLETED
    return JobOut(
        id=job.id,
        status=job.status.value,
        percentage=min(percentage, 100.0),
        dbId=job.layer_id,
        bbox=job.bbox,
        snappedBbox=job.snapped_bbox,
        targetResolution=job.target_resolution,
        crs=job.crs,
        zoom=job.zoom,
        priority=job.priority,
        tileFormat=job.tile_format,
        tiles=TileCounts(planned=job.tiles_planned, done=job.tiles_done, written=job.tiles_written),
        tasks=[
            TaskOut(
                id=t.id, zoom=t.zoom, tileRange=[t.min_col, t.min_row, t.max_col, t.max_row],
                status=t.status.value,
                tiles=TileCounts(planned=t.tiles_planned, done=t.tiles_done, written=t.tiles_written),
                error=t.error,
            )
            for t in job.tasks
        ],
        callbackURLs=job.callback_urls,
        callbacks=[
            CallbackAttemptOut(url=a.url, attempt=a.attempt, statusCode=a.status_code, success=a.success,
                               error=a.error, at=a.at)
            for a in job.callback_attempts
        ],
        flowRunId=job.flow_run_id,
        packageName=job.package_name,
        fileUri=map_packages.file_uri(job.package_name) if completed else None,
        fileSize=job.file_size if completed else None,
        sha256=job.sha256 if completed else None,
        expirationTime=job.expires_at,
        errorReason=job.error_reason,
        createdAt=job.created_at,
        startedAt=job.started_at,
        completedAt=job.completed_at,
    )


def retry_job(session: Session, job: MapJob) -> CreateGpkgJobResponse:
    """Run a failed job again; blocks rendered before the failure are reused, not rendered again."""
    if job.status != JobStatus.FAILED:
        raise Conflict(f"only a Failed job can be retried; map job {job.id} is {job.status.value}")
    job.status = JobStatus.PENDING
    job.error_reason = None
    job.completed_at = job.queued_at = job.started_at = None
    for t in job.tasks:
        if t.status != TaskStatus.COMPLETED:
            t.status = TaskStatus.PENDING
            t.error = None
    session.commit()
    _start_flow(session, job, "the job could not be restarted")
    log.info("map job retried job=%s flow_run=%s", job.id, job.flow_run_id)
    return CreateGpkgJobResponse(id=job.id, taskIds=[t.id for t in job.tasks])


def delete_job(session: Session, job: MapJob) -> dict[str, Any]:
    """Cancel a running job (no package is published, callbacks report it) or delete a finished one."""
    settings = get_settings()
    if job.status in ACTIVE_STATUSES:
        job.status = JobStatus.ABORTED
        job.error_reason = "cancelled by the client"
        job.completed_at = _now()
        session.commit()
        if job.flow_run_id:
            try:
                from core.launch import cancel

                cancel(job.flow_run_id)
            except Exception as exc:  # the job is marked aborted either way; the flow checks it
                log.warning("cancel of flow run failed job=%s error=%s", job.id, exc)
        try:
            launch(settings.callbacks_deployment, {"job_id": str(job.id)}, flow_run_name=f"callbacks-{job.id}")
        except LaunchError as exc:
            log.warning("could not launch callbacks for aborted job=%s: %s", job.id, exc)
        return {"id": str(job.id), "status": job.status.value, "message": "job cancelled"}

    storage = get_storage()
    storage.remove(map_packages.package_path(job.package_name))
    storage.remove(map_packages.sidecar_path(job.package_name))
    storage.remove(map_packages.job_work_dir(job.id))
    session.delete(job)
    session.commit()
    return {"id": str(job.id), "status": "Deleted", "message": "job and package deleted"}
