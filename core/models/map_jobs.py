from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, enum_column, utcnow


class JobStatus(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "In-Progress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    ABORTED = "Aborted"
    EXPIRED = "Expired"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.IN_PROGRESS)
FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED, JobStatus.EXPIRED)


class TaskStatus(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "In-Progress"
    COMPLETED = "Completed"
    FAILED = "Failed"


class MapJob(Base):
    """One requested map package (a GeoPackage of one layer, bbox and zoom range)."""

    __tablename__ = "map_jobs"
    __table_args__ = (Index("ix_map_jobs_cache_key_status", "cache_key", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    layer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("layers.id", ondelete="RESTRICT"))
    # Identical requests (same layer, crs, zoom, snapped bbox) share a cache key.
    cache_key: Mapped[str] = mapped_column(String(128))
    status: Mapped[JobStatus] = mapped_column(enum_column(JobStatus), default=JobStatus.PENDING)
    bbox: Mapped[list] = mapped_column(JSON)  # as requested
    snapped_bbox: Mapped[list] = mapped_column(JSON)  # clipped to the footprint, snapped to the grid
    target_resolution: Mapped[float] = mapped_column(Float)
    crs: Mapped[str] = mapped_column(String(32), default="EPSG:4326")
    zoom: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    tile_format: Mapped[str] = mapped_column(String(8))
    callback_urls: Mapped[list] = mapped_column(JSON, default=list)
    owner: Mapped[str | None] = mapped_column(String(255), default=None)
    # subjects whose identical request was answered with this job (the naive cache shares packages)
    shared_with: Mapped[list] = mapped_column(JSON, default=list)
    tiles_planned: Mapped[int] = mapped_column(Integer, default=0)
    tiles_done: Mapped[int] = mapped_column(Integer, default=0)
    tiles_written: Mapped[int] = mapped_column(Integer, default=0)
    estimated_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    package_name: Mapped[str] = mapped_column(String(255))
    file_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    error_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set when the flow run reaches the admission gate and waits for a free slot
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    # touched by the running flow every few seconds: a stale value means its process is gone
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # flow runs that worked on this job
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)

    tasks: Mapped[list[MapJobTask]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="MapJobTask.seq"
    )
    callback_attempts: Mapped[list[CallbackAttempt]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="CallbackAttempt.id"
    )
    callback_deliveries: Mapped[list[CallbackDelivery]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


class MapJobTask(Base):
    """A work unit of a map job: one rectangular block of tiles at one zoom."""

    __tablename__ = "map_job_tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("map_jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    zoom: Mapped[int] = mapped_column(Integer)
    min_col: Mapped[int] = mapped_column(Integer)
    min_row: Mapped[int] = mapped_column(Integer)
    max_col: Mapped[int] = mapped_column(Integer)
    max_row: Mapped[int] = mapped_column(Integer)
    status: Mapped[TaskStatus] = mapped_column(enum_column(TaskStatus), default=TaskStatus.PENDING)
    tiles_planned: Mapped[int] = mapped_column(Integer)
    tiles_done: Mapped[int] = mapped_column(Integer, default=0)
    tiles_written: Mapped[int] = mapped_column(Integer, default=0)
    renders: Mapped[int] = mapped_column(Integer, default=0)  # times this block was rendered (resume skips done ones)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    job: Mapped[MapJob] = relationship(back_populates="tasks")


class CallbackAttempt(Base):
    __tablename__ = "map_job_callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("map_jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    job_status: Mapped[str] = mapped_column(String(32), default="")  # the outcome this attempt reported
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    success: Mapped[bool] = mapped_column(default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[MapJob] = relationship(back_populates="callback_attempts")


class CallbackDelivery(Base):
    """Who is delivering one outcome of a job to one URL: the claim that makes it a single delivery.

    A cancelled flow and the cancellation's own callback flow may both set out to report ``Aborted``; the
    first to insert this row sends, the other skips. A claim is taken over only when its sender finished
    without delivering (a later re-send) or has held it past its lease (a sender that died).
    """

    __tablename__ = "map_job_callback_deliveries"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("map_jobs.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    job_status: Mapped[str] = mapped_column(String(32), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    done: Mapped[bool] = mapped_column(default=False)
    delivered: Mapped[bool] = mapped_column(default=False)

    job: Mapped[MapJob] = relationship(back_populates="callback_deliveries")
