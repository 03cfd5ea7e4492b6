"""Results of source applications — from the upload API and from the results topic, one code path.

Both doors end in ``complete_from_file`` or ``fail_source``: a guarded state change of
the source (only a pending source finishes, so a repeated result changes nothing), then
``source_finished``, which marks the export running and, once no source is pending,
launches packaging exactly once (``start_packaging``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import exists, update

from core.db import session_scope
from core.launch import LaunchError, launch
from core.models.base import utcnow
from core.models.exports import Export, ExportSource, ExportStatus, SourceStatus
from core.resource_exports import files
from core.resource_exports.errors import Finished, InvalidRequest, NotFound
from core.resource_exports.formats import MalformedResult, check_result
from core.settings import get_settings
from core.storage import Storage

log = logging.getLogger("geoexport.exports")


@dataclass(frozen=True)
class Target:
    """The source a result is for, checked and detached from any session."""

    export_id: uuid.UUID
    source_id: uuid.UUID
    application: str
    resource: str
    format: str

    @property
    def final_path(self) -> Path:
        return files.source_file(self.export_id, self.source_id, self.format)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise NotFound(f"{what} {value} not found") from exc


def find_target(export_id: str, application: str, source_id: str) -> Target:
    """The pending source ``source_id`` of ``export_id``: 404 unknown, 400 wrong application, 410 finished."""
    eid, sid = _uuid(export_id, "export"), _uuid(source_id, "source")
    with session_scope() as s:
        export = s.get(Export, eid)
        if export is None:
            raise NotFound(f"export {export_id} not found")
        src = s.get(ExportSource, sid)
        if src is None or src.export_id != eid:
            raise NotFound(f"source {source_id} not found in export {export_id}")
        if src.application != application:
            raise InvalidRequest(f"source {source_id} belongs to application {src.application!r}, not {application!r}")
        if src.status != SourceStatus.PENDING:
            raise Finished(f"source {source_id} already finished ({src.status.value}); the result was not taken")
        if export.expires_at <= utcnow():
            raise Finished(f"export {export_id} has expired")
        return Target(eid, sid, src.application, src.resource, export.format)


def temp_path(target: Target) -> Path:
    final = target.final_path
    final.parent.mkdir(parents=True, exist_ok=True)
    return Storage.temp_path_for(final)


def complete_from_file(target: Target, tmp: Path) -> bool:
    """Check the received file and make it the source's result; a malformed one fails the source.

    Raises ``MalformedResult`` after failing the source, so the caller can tell the sender.
    """
    try:
        check_result(tmp, target.format)
    except MalformedResult as exc:
        tmp.unlink(missing_ok=True)
        fail_source(target, f"malformed {target.format} result: {exc}", "malformed")
        raise
    size = tmp.stat().st_size
    with session_scope() as s:
        done = s.execute(
            update(ExportSource)
            .where(ExportSource.id == target.source_id, ExportSource.status == SourceStatus.PENDING)
            .values(status=SourceStatus.COMPLETE, file_size=size, completed_at=utcnow(), message=None, error=None)
        ).rowcount
        if done == 1:
            # renamed inside the transaction: a source is complete exactly when its file is in place
            Storage.publish(tmp, target.final_path)
    if done != 1:
        tmp.unlink(missing_ok=True)
        log.info("result ignored, source already finished export=%s source=%s", target.export_id, target.source_id)
        return False
    log.info("source complete export=%s source=%s app=%s resource=%s bytes=%d", target.export_id,
             target.source_id, target.application, target.resource, size)
    source_finished(target.export_id)
    return True


def fail_source(target: Target, message: str, error: Any = None) -> bool:
    with session_scope() as s:
        done = s.execute(
            update(ExportSource)
            .where(ExportSource.id == target.source_id, ExportSource.status == SourceStatus.PENDING)
            .values(status=SourceStatus.FAILED, message=message[:4000], error=error, completed_at=utcnow())
        ).rowcount
    if done != 1:
        return False
    log.info("source failed export=%s source=%s app=%s resource=%s message=%s", target.export_id,
             target.source_id, target.application, target.resource, message)
    source_finished(target.export_id)
    return True


def source_finished(export_id: uuid.UUID) -> None:
    with session_scope() as s:
        s.execute(update(Export).where(Export.id == export_id, Export.status == ExportStatus.PENDING)
                  .values(status=ExportStatus.RUNNING))
    start_packaging(export_id)


def start_packaging(export_id: uuid.UUID) -> str | None:
    """Launch ``package-export`` once every source has finished — exactly once per export.

    The guard is one UPDATE: it sets ``package_requested_at`` only while it is NULL and no
    source is pending, so of two processes finishing the last sources at once only one wins.
    """
    pending = exists().where(ExportSource.export_id == Export.id, ExportSource.status == SourceStatus.PENDING)
    with session_scope() as s:
        won = s.execute(
            update(Export)
            .where(Export.id == export_id, Export.package_requested_at.is_(None), ~pending)
            .values(package_requested_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
    if won != 1:
        return None
    try:
        run_id = launch(get_settings().package_deployment, {"export_id": str(export_id)},
                        flow_run_name=f"package-{export_id}", tags=["exports"])
    except LaunchError as exc:
        # give the transition back: the next sweep (or result) tries again
        with session_scope() as s:
            s.execute(update(Export).where(Export.id == export_id).values(package_requested_at=None))
        log.error("packaging not launched export=%s error=%s", export_id, exc)
        return None
    with session_scope() as s:
        s.execute(update(Export).where(Export.id == export_id).values(flow_run_id=run_id))
    log.info("packaging launched export=%s flow_run=%s", export_id, run_id)
    return run_id

