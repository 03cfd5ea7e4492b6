"""Database reads and writes the map-package flow makes, kept out of the flow body."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update

from core.db import get_engine, session_scope
from core.models import JobStatus, Layer, MapJob, MapJobTask, TaskStatus
from core.settings import get_settings


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobSpec:
    """Everything the flow needs about a job, detached from the session."""

    id: str
    status: JobStatus
    source: str
    footprint: dict[str, Any]
    zoom: int
    tile_format: str
    package_name: str
    snapped_bbox: list[float]
    layer_id: str
    product_name: str
    product_version: str
    tiles_planned: int


def load(job_id: str) -> JobSpec | None:
    with session_scope() as s:
        job = s.get(MapJob, uuid.UUID(job_id))
        if job is None:
            return None
        layer = s.get(Layer, job.layer_id)
        assert layer is not None
        return JobSpec(
            id=str(job.id), status=job.status, source=layer.source, footprint=layer.footprint,
            zoom=job.zoom, tile_format=job.tile_format, package_name=job.package_name,
            snapped_bbox=list(job.snapped_bbox), layer_id=str(layer.id), product_name=layer.product_name,
            product_version=layer.product_version, tiles_planned=job.tiles_planned,
        )


def status(job_id: str) -> JobStatus | None:
    with session_scope() as s:
        return s.scalar(select(MapJob.status).where(MapJob.id == uuid.UUID(job_id)))


def tasks(job_id: str) -> list[MapJobTask]:
    with session_scope() as s:
        return list(s.scalars(select(MapJobTask).where(MapJobTask.job_id == uuid.UUID(job_id))
                              .order_by(MapJobTask.seq)))


def mark_queued(job_id: str, flow_run_id: str | None) -> None:
    with session_scope() as s:
        job = s.get(MapJob, uuid.UUID(job_id))
        if job is not None and job.status == JobStatus.PENDING:
            job.queued_at = job.queued_at or now()
            if flow_run_id:
                job.flow_run_id = flow_run_id


def try_admit(job_id: str, limit: int) -> bool:
    """Start the job if a slot is free and no waiting job outranks it (higher priority, then older).

    Only jobs whose flow has reached the gate (``queued_at`` set) compete, so a job whose
    flow run never started cannot block the others.
    """
    engine = get_engine()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # serialise admissions: two gates must not both see the last free slot
            conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
        else:
            # SQLite: write first so the transaction holds the write lock before it reads
            conn.execute(update(MapJob).where(MapJob.id == uuid.UUID(job_id)).values(queued_at=MapJob.queued_at))
        me = conn.execute(
            select(MapJob.status, MapJob.priority, MapJob.created_at).where(MapJob.id == uuid.UUID(job_id))
        ).one_or_none()
        if me is None or me.status != JobStatus.PENDING:
            return False
        running = conn.scalar(select(func.count()).select_from(MapJob).where(MapJob.status == JobStatus.IN_PROGRESS))
        if running >= limit:
            return False
        ahead = conn.scalar(
            select(func.count()).select_from(MapJob).where(
                MapJob.status == JobStatus.PENDING,
                MapJob.queued_at.is_not(None),
                MapJob.id != uuid.UUID(job_id),
                (MapJob.priority > me.priority)
                | ((MapJob.priority == me.priority) & (MapJob.created_at < me.created_at)),
            )
        )
        if ahead >= limit - running:
            return False
        conn.execute(
            update(MapJob).where(MapJob.id == uuid.UUID(job_id), MapJob.status == JobStatus.PENDING)
            .values(status=JobStatus.IN_PROGRESS, started_at=now())
        )
        return True


def mark_task(task_id: str, status: TaskStatus, *, done: int | None = None, written: int | None = None,
              error: str | None = None) -> None:
    with session_scope() as s:
        t = s.get(MapJobTask, uuid.UUID(task_id))
        if t is None:
            return
        t.status = status
        if status == TaskStatus.IN_PROGRESS:
            t.renders += 1
        if done is not None:
            t.tiles_done = done
        if written is not None:
            t.tiles_written = written
        t.error = error


def refresh_progress(job_id: str) -> tuple[int, int]:
    """Recompute the job's tile counters from its tasks; returns (done, planned)."""
    with session_scope() as s:
        jid = uuid.UUID(job_id)
        done, written = s.execute(
            select(
                func.coalesce(func.sum(MapJobTask.tiles_done), 0),
                func.coalesce(func.sum(MapJobTask.tiles_written), 0),
            ).where(MapJobTask.job_id == jid)
        ).one()
        job = s.get(MapJob, jid)
        if job is None:
            return 0, 0
        job.tiles_done = int(done)
        job.tiles_written = int(written)
        return job.tiles_done, job.tiles_planned


def complete(job_id: str, file_size: int, sha256: str) -> bool:
    """Publish the job as Completed unless it was aborted meanwhile; returns whether it was."""
    ttl = timedelta(days=get_settings().package_ttl_days)
    with session_scope() as s:
        job = s.get(MapJob, uuid.UUID(job_id), with_for_update=True)
        if job is None or job.status != JobStatus.IN_PROGRESS:
            return False
        t = now()
        job.status = JobStatus.COMPLETED
        job.completed_at = t
        job.expires_at = t + ttl
        job.file_size = file_size
        job.sha256 = sha256
        job.error_reason = None
        return True


def begin_attempt(job_id: str, flow_run_id: str | None) -> int:
    """Count a flow run working on the job; returns the attempt number."""
    with session_scope() as s:
        job = s.get(MapJob, uuid.UUID(job_id))
        if job is None:
            return 0
        job.attempts += 1
        job.heartbeat_at = now()
        if flow_run_id:
            job.flow_run_id = flow_run_id
        return job.attempts


def beat(job_id: str) -> None:
    with session_scope() as s:
        s.execute(update(MapJob).where(MapJob.id == uuid.UUID(job_id)).values(heartbeat_at=now()))


class Heartbeat:
    """Touches the job's heartbeat while the flow works, so a dead process can be told from a slow one."""

    def __init__(self, job_id: str, every: float) -> None:
        import threading

        self.job_id = job_id
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                beat(self.job_id)
            except Exception:  # a missed beat is harmless; the next one retries
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def fail(job_id: str, reason: str) -> None:
    with session_scope() as s:
        job = s.get(MapJob, uuid.UUID(job_id))
        if job is None or job.status in (JobStatus.ABORTED, JobStatus.COMPLETED, JobStatus.EXPIRED):
            return
        job.status = JobStatus.FAILED
        job.error_reason = reason[:4000]
        job.completed_at = now()
