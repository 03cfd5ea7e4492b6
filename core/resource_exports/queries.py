"""Reading and deleting exports on behalf of one identity (another's export simply does not exist)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from core.models.base import utcnow
from core.models.exports import Export, ExportResultPart, ExportSource, ExportStatus, OutboxMessage
from core.resource_exports import files
from core.resource_exports.errors import NotFound, NotReady
from core.resource_exports.identity import Identity
from core.storage import Storage

log = logging.getLogger("geoexport.exports")

SORTS = {"name": Export.name, "created_at": Export.created_at, "expires_at": Export.expires_at}
DOWNLOADABLE = (ExportStatus.COMPLETE, ExportStatus.PARTIAL, ExportStatus.FAILED)


@dataclass
class ListFilters:
    name: str | None = None
    status: str | None = None
    application: str | None = None
    resource: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    expires_from: datetime | None = None
    expires_to: datetime | None = None


def _owned(identity: Identity) -> Select[tuple[Export]]:
    return select(Export).where(Export.org_id == identity.org_id, Export.username == identity.username,
                                Export.expires_at > utcnow())


def get_owned(session: Session, identity: Identity, export_id: str) -> Export:
    """The caller's unexpired export, or 404 — also for another identity's export."""
    try:
        eid = uuid.UUID(export_id)
    except ValueError as exc:
        raise NotFound(f"export {export_id} not found") from exc
    export = session.scalar(_owned(identity).where(Export.id == eid))
    if export is None:
        raise NotFound(f"export {export_id} not found")
    return export


def list_owned(session: Session, identity: Identity, f: ListFilters, *, sort: str, descending: bool,
               limit: int, offset: int) -> tuple[int, list[Export]]:
    q = _owned(identity)
    if f.name is not None:
        q = q.where(Export.name == f.name)
    if f.status is not None:
        q = q.where(Export.status == ExportStatus(f.status))
    if f.application is not None or f.resource is not None:
        sub = select(ExportSource.export_id)
        if f.application is not None:
            sub = sub.where(ExportSource.application == f.application)
        if f.resource is not None:
            sub = sub.where(ExportSource.resource == f.resource)
        q = q.where(Export.id.in_(sub))
    for col, lo, hi in ((Export.created_at, f.created_from, f.created_to),
                        (Export.expires_at, f.expires_from, f.expires_to)):
        if lo is not None:
            q = q.where(col >= lo)
        if hi is not None:
            q = q.where(col <= hi)
    count = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    col = SORTS[sort]
    order = [col.desc() if descending else col.asc(), Export.id.desc() if descending else Export.id.asc()]
    rows = list(session.scalars(q.order_by(*order).limit(limit).offset(offset)))
    return count, rows


def package_path(export: Export) -> Path:
    if export.status not in DOWNLOADABLE:
        raise NotReady(f"export {export.id} is not ready yet (status {export.status.value})")
    path = files.package_file(export.id)
    if not path.is_file():
        raise NotReady(f"export {export.id} has no package (status {export.status.value}: {export.error or ''})")
    return path


def delete_export(session: Session, export: Export) -> None:
    """Remove the rows and every file of an export (its zip and any received results)."""
    eid = export.id
    source_ids = select(ExportSource.id).where(ExportSource.export_id == eid)
    session.execute(delete(ExportResultPart).where(ExportResultPart.source_id.in_(source_ids)))
    session.execute(delete(OutboxMessage).where(OutboxMessage.export_id == eid))
    session.execute(delete(ExportSource).where(ExportSource.export_id == eid))
    session.execute(delete(Export).where(Export.id == eid))
    session.commit()
    Storage.remove(files.package_file(eid))
    Storage.remove(files.upload_dir(eid))
    log.info("export deleted export=%s", eid)


def delete_expired(session: Session, now: datetime | None = None) -> list[str]:
    """For the cleanup flow: delete every export past its expiry, rows and files."""
    expired = list(session.scalars(select(Export).where(Export.expires_at <= (now or utcnow()))))
    for export in expired:
        delete_export(session, export)
    return [str(e.id) for e in expired]
