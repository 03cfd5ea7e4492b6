"""What expires and what is left over, and removing it. Idempotent and safe beside running flows.

Used by the ``cleanup-expired`` flow and by ``geoexport cleanup --dry-run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from core import map_packages
from core.db import session_scope
from core.models import JobStatus, MapJob
from core.models.map_jobs import ACTIVE_STATUSES
from core.settings import get_settings
from core.storage import TMP_SUFFIX, Storage

log = logging.getLogger("geoexport.cleanup")


@dataclass
class CleanupReport:
    dry_run: bool
    expired_packages: int = 0
    orphan_work_dirs: int = 0
    orphan_temp_files: int = 0
    bytes_freed: int = 0
    items: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, path: Path | None, size: int) -> None:
        self.items.append(f"{what}: {path}" if path else what)
        self.bytes_freed += size

    def discard(self, what: str, path: Path) -> None:
        """Count ``path`` as freed and, unless this is a dry run, delete it."""
        self.add(what, path, path_size(path))
        if not self.dry_run:
            Storage.remove(path)

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "expired_packages": self.expired_packages,
            "orphan_work_dirs": self.orphan_work_dirs,
            "orphan_temp_files": self.orphan_temp_files,
            "bytes_freed": self.bytes_freed,
            **self.extra,
            "items": self.items,
        }


def path_size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def expire_map_packages(report: CleanupReport, now: datetime) -> None:
    with session_scope() as s:
        due = s.scalars(
            select(MapJob).where(MapJob.status == JobStatus.COMPLETED, MapJob.expires_at <= now)
            .with_for_update(skip_locked=True)
        ).all()
        for job in due:
            paths = [map_packages.package_path(job.package_name), map_packages.sidecar_path(job.package_name),
                     map_packages.job_work_dir(job.id)]
            size = sum(path_size(p) for p in paths)
            report.add(f"expired package {job.package_name} (job {job.id})", None, size)
            report.expired_packages += 1
            if report.dry_run:
                continue
            # the row changes first: from here on the cache can no longer hit and downloads answer 404
            job.status = JobStatus.EXPIRED
            s.flush()
            for p in paths:
                Storage.remove(p)
            log.info("expired map package job=%s package=%s bytes=%d", job.id, job.package_name, size)


def remove_orphan_work_dirs(report: CleanupReport, older_than: float) -> None:
    work = get_settings().work_dir
    if not work.is_dir():
        return
    with session_scope() as s:
        active = {str(j) for j in s.scalars(select(MapJob.id).where(MapJob.status.in_(ACTIVE_STATUSES)))}
    cutoff = time.time() - older_than
    for d in work.iterdir():
        # batch files of an active job are kept for a resumed run, however old
        if not d.is_dir() or d.name in active or d.stat().st_mtime > cutoff:
            continue
        report.orphan_work_dirs += 1
        report.discard("work files of a finished job", d)


def remove_orphan_temp_files(report: CleanupReport, older_than: float) -> None:
    """``*.partial`` files not touched for ``older_than`` seconds: their writer is gone."""
    root = get_settings().storage_dir
    if not root.is_dir():
        return
    cutoff = time.time() - older_than
    for f in root.rglob(f"*{TMP_SUFFIX}"):
        try:
            if f.stat().st_mtime > cutoff:
                continue  # still being written
        except FileNotFoundError:
            continue
        report.orphan_temp_files += 1
        report.discard("orphaned temporary file", f)


# Other capabilities (resource exports) register their own sweeps here.
EXTRA_SWEEPS: list[Callable[[CleanupReport, datetime], None]] = []


def run_cleanup(dry_run: bool = False) -> CleanupReport:
    settings = get_settings()
    report = CleanupReport(dry_run=dry_run)
    now = datetime.now(UTC)
    expire_map_packages(report, now)
    remove_orphan_work_dirs(report, settings.orphan_ttl_seconds)
    remove_orphan_temp_files(report, settings.orphan_ttl_seconds)
    _load_extra_sweeps()
    for sweep in EXTRA_SWEEPS:
        sweep(report, now)
    return report


def _load_extra_sweeps() -> None:
    try:
        import core.resource_exports.cleanup  # noqa: F401  (registers its sweep)
    except ImportError:
        pass
