from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import require
from api.deps import db_session
from api.errors import NotFound
from core import map_packages
from core.models import JobStatus, MapJob

router = APIRouter(tags=["downloads"])


def _finished_job(session: Session, package_name: str) -> MapJob:
    job = session.scalar(select(MapJob).where(MapJob.package_name == package_name))
    now = datetime.now(UTC)
    if job is None or job.status != JobStatus.COMPLETED or (job.expires_at and job.expires_at <= now):
        raise NotFound(f"package {package_name} not found (never made, deleted or expired)")
    return job


@router.get("/downloads/{package_name}", dependencies=[Depends(require("export"))])
def download(package_name: str, session: Session = Depends(db_session)) -> FileResponse:
    if package_name.endswith(".sha256.json"):
        job = _finished_job(session, package_name.removesuffix(".sha256.json"))
        path = map_packages.sidecar_path(job.package_name)
        media = "application/json"
    else:
        job = _finished_job(session, package_name)
        path = map_packages.package_path(job.package_name)
        media = "application/geopackage+sqlite3"
    if not path.is_file():
        raise NotFound(f"package {package_name} is no longer stored")
    # FileResponse streams from disk and answers Range requests (206) itself.
    return FileResponse(path, media_type=media, filename=path.name)
