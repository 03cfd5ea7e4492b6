"""Resource exports: an export, its sources, received result parts and the Kafka outbox."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, enum_column, utcnow


class ExportStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PARTIAL = "partial"
    COMPLETE = "complete"
    FAILED = "failed"


class SourceStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETE = "complete"
    FAILED = "failed"


class Export(Base):
    """One requested export: a zip of what every source application sends back."""

    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_owner", "org_id", "username", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))
    status: Mapped[ExportStatus] = mapped_column(enum_column(ExportStatus, 16), default=ExportStatus.PENDING)
    org_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(255))
    identity_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set by the one transition that launches packaging; NULL until every source has finished.
    package_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    file_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    sources: Mapped[list[ExportSource]] = relationship(
        back_populates="export", cascade="all, delete-orphan", order_by="ExportSource.position",
        passive_deletes=True,
    )


class ExportSource(Base):
    """One (application, resource, filters) of an export, answered by a source application."""

    __tablename__ = "export_sources"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    export_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("exports.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    application: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(255))
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[SourceStatus] = mapped_column(enum_column(SourceStatus, 16), default=SourceStatus.PENDING)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    file_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)

    export: Mapped[Export] = relationship(back_populates="sources")


class ExportResultPart(Base):
    """A received piece of a result split over several Kafka messages (headers part/parts)."""

    __tablename__ = "export_result_parts"
    # A redelivered part hits this constraint instead of adding its data twice.
    __table_args__ = (UniqueConstraint("source_id", "part", name="uq_export_result_parts_source_part"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("export_sources.id", ondelete="CASCADE"), index=True)
    part: Mapped[int] = mapped_column(Integer)
    parts: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """A Kafka message written in the transaction of its export and sent later by the publisher."""

    __tablename__ = "export_outbox"
    __table_args__ = (Index("ix_export_outbox_sent_at_id", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), index=True, default=None
    )
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255), default=None)
    value: Mapped[str] = mapped_column(Text)
    headers: Mapped[list] = mapped_column(JSON, default=list)  # [[name, value], ...]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # A sender claims rows with a lease so the API's immediate attempt and the publisher never both send one.
    lease_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
