from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from api import map_jobs
from api.auth import principal, require
from api.deps import db_session
from api.errors import BadRequest
from api.schemas.map_jobs import (
    CreateGpkgJobResponse,
    ExportGetMap,
    JobOut,
    NaiveCacheJobResponse,
    StorageOut,
)
from core.storage import get_storage
from core.tokens import Principal

router = APIRouter(tags=["createGpkg"])


@router.post(
    "/create",
    response_model=CreateGpkgJobResponse | NaiveCacheJobResponse,
    summary="Trigger export geopackage process",
    operation_id="exportTilesToGpkg",
    responses={400: {"description": "Bad Request"}, 404: {"description": "Could not find layer with matched dbId"},
               507: {"description": "Not enough free space for the package"}},
)
def create(body: ExportGetMap, session: Session = Depends(db_session), who: Principal = Depends(require("export"))
           ) -> CreateGpkgJobResponse | NaiveCacheJobResponse:
    return map_jobs.create_job(session, body, who.subject)


def _job_id(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError as exc:
        raise BadRequest(f"job id {job_id!r} is not a UUID") from exc


@router.get("/create/{job_id}", response_model=JobOut)
def status(job_id: str, session: Session = Depends(db_session), who: Principal = Depends(principal)) -> JobOut:
    return map_jobs.describe(map_jobs.get_job(session, _job_id(job_id), who))


@router.delete("/create/{job_id}")
def delete(job_id: str, session: Session = Depends(db_session), who: Principal = Depends(principal)
           ) -> dict[str, str]:
    return map_jobs.delete_job(session, map_jobs.get_job(session, _job_id(job_id), who, manage=True))


@router.post("/create/{job_id}/retry", response_model=CreateGpkgJobResponse)
def retry(job_id: str, session: Session = Depends(db_session), who: Principal = Depends(require("export"))
          ) -> CreateGpkgJobResponse:
    """Run a Failed job again (after a crash, say); finished tile blocks are reused."""
    return map_jobs.retry_job(session, map_jobs.get_job(session, _job_id(job_id), who, manage=True))


@router.get("/storage", response_model=StorageOut, tags=["storage"], dependencies=[Depends(principal)])
def storage() -> StorageOut:
    free, size = get_storage().usage()
    return StorageOut(free=free, size=size)
