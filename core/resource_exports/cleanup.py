"""The resource-export part of the cleanup flow: expired exports, and sources that never answered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from core.cleanup import EXTRA_SWEEPS, CleanupReport, path_size
from core.db import session_scope
from core.models.exports import Export
from core.resource_exports import files
from core.resource_exports.queries import delete_export


def expire_exports(report: CleanupReport, now: datetime) -> None:
    count = 0
    with session_scope() as s:
        for export in s.scalars(select(Export).where(Export.expires_at <= now)).all():
            paths = [files.package_file(export.id), files.upload_dir(export.id)]
            size = sum(path_size(p) for p in paths)
            report.add(f"expired export {export.id} ({export.name})", None, size)
            count += 1
            if not report.dry_run:
                delete_export(s, export)
    report.extra["expired_exports"] = report.extra.get("expired_exports", 0) + count


def time_out_sources(report: CleanupReport, now: datetime) -> None:
    if report.dry_run:
        return
    from core.resource_exports.sweep import sweep

    result = sweep(now)
    report.extra["timed_out_sources"] = len(result.timed_out)
    report.extra["packaging_launched"] = len(result.launched)
    for sid in result.timed_out:
        report.items.append(f"source {sid} timed out")


for fn in (time_out_sources, expire_exports):
    if fn not in EXTRA_SWEEPS:
        EXTRA_SWEEPS.append(fn)
