"""Sources that never answer, and packaging that was never launched.

``sweep()`` is what the results consumer runs periodically and what a scheduled flow
(the cleanup flow) can call: it fails every source pending longer than
``GEOEXPORT_SOURCE_TIMEOUT`` with "timed out" — which packages its export as partial or
failed through the usual path — and relaunches packaging whose launch failed earlier.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, select

from core.db import session_scope
from core.models.base import utcnow
from core.models.exports import Export, ExportSource, ExportStatus, SourceStatus
from core.resource_exports.results import Target, fail_source, start_packaging
from core.settings import get_settings

log = logging.getLogger("geoexport.exports")

TIMED_OUT = "timed out"


@dataclass
class SweepReport:
    timed_out: list[str] = field(default_factory=list)  # source ids
    launched: list[str] = field(default_factory=list)  # export ids whose packaging was (re)launched


def fail_overdue_sources(now: datetime | None = None) -> list[str]:
    timeout = get_settings().source_timeout
    cutoff = (now or utcnow()) - timedelta(seconds=timeout)
    with session_scope() as s:
        rows = s.execute(
            select(ExportSource.id, ExportSource.export_id, ExportSource.application, ExportSource.resource,
                   Export.format)
            .join(Export, Export.id == ExportSource.export_id)
            .where(ExportSource.status == SourceStatus.PENDING, Export.created_at < cutoff)
        ).all()
    failed = []
    for sid, eid, app, res, fmt in rows:
        if fail_source(Target(eid, sid, app, res, fmt), TIMED_OUT, f"no result within {timeout:g} seconds"):
            failed.append(str(sid))
    if failed:
        log.info("sources timed out count=%d", len(failed))
    return failed


def launch_stuck_packaging() -> list[str]:
    """Exports whose sources all finished but whose packaging launch did not happen (or failed)."""
    pending = exists().where(ExportSource.export_id == Export.id, ExportSource.status == SourceStatus.PENDING)
    with session_scope() as s:
        ids: list[uuid.UUID] = list(s.scalars(
            select(Export.id).where(Export.package_requested_at.is_(None), ~pending,
                                    Export.status.in_([ExportStatus.PENDING, ExportStatus.RUNNING]))
        ))
    return [str(i) for i in ids if start_packaging(i)]


def sweep(now: datetime | None = None) -> SweepReport:
    report = SweepReport(timed_out=fail_overdue_sources(now))
    report.launched = launch_stuck_packaging()
    return report
