"""Resource exports: the public API (``/api/export/v1``) and the source applications' API (``/app/export/v1``)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.deps import db_session
from api.errors import BadRequest, Gone, PayloadTooLarge
from api.identity import current_identity
from api.psk import source_application
from api.schemas.exports import (
    Accepted,
    ExportCreate,
    ExportList,
    ExportMeta,
    ExportOut,
    ExportStatusOut,
    Links,
    ListMeta,
    ResultError,
    SourceOut,
    SourceStatusOut,
)
from core.models.exports import Export, ExportStatus
from core.resource_exports import queries
from core.resource_exports.formats import MalformedResult
from core.resource_exports.identity import Identity
from core.resource_exports.outbox import try_publish_now
from core.resource_exports.requests import NewExport, SourceRequest, create_export
from core.resource_exports.results import complete_from_file, fail_source, find_target, temp_path
from core.settings import get_settings

log = logging.getLogger("geoexport.api.exports")

public = APIRouter(prefix="/api/export/v1", tags=["resource exports"])
internal = APIRouter(prefix="/app/export/v1", tags=["resource exports: source applications"])
routers = [public, internal]


def _export_out(e: Export) -> ExportOut:
    return ExportOut(
        id=e.id, name=e.name, created_at=e.created_at, expires_at=e.expires_at, format=e.format,
        status=e.status.value,
        sources=[SourceOut(id=s.id, application=s.application, resource=s.resource, filters=s.filters or {},
                           status=s.status.value) for s in e.sources],
    )


def _meta(e: Export) -> ExportMeta:
    return ExportMeta(id=e.id, name=e.name, created_at=e.created_at, completed_at=e.completed_at,
                      expires_at=e.expires_at, format=e.format, status=e.status.value)


# ------------------------------------------------------------------ public API --------------------------------------


@public.post("/exports", status_code=202, response_model=ExportOut, summary="Request an export")
def create(body: ExportCreate, background: BackgroundTasks, identity: Identity = Depends(current_identity),
           session: Session = Depends(db_session)) -> ExportOut:
    req = NewExport(
        name=body.name, format=body.format, expires_at=body.expires_at,
        sources=None if body.sources is None else [
            SourceRequest(s.application, s.resource, s.filters, s.expires) for s in body.sources
        ],
    )
    export = create_export(session, identity, req)
    session.commit()  # the export and its request messages (the outbox rows) in one transaction
    background.add_task(try_publish_now, export.id)
    return _export_out(export)


def _when(value: str | None, field: str, *, end: bool = False) -> datetime | None:
    """A date (the whole day) or a datetime; naive values are UTC."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime.combine(d, time.max if end else time.min, tzinfo=UTC)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{field} must be a date (YYYY-MM-DD) or an ISO 8601 datetime") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _range(exact: str | None, lo: str | None, hi: str | None, field: str) -> tuple[datetime | None, datetime | None]:
    start, stop = _when(lo, f"{field}_from"), _when(hi, f"{field}_to", end=True)
    if exact:
        # created_at=<date> (or datetime) means that whole day, as in the console export service
        day = _when(exact, field)
        assert day is not None
        day0 = datetime.combine(day.date(), time.min, tzinfo=UTC)
        start, stop = max(filter(None, [start, day0])), min(filter(None, [stop, day0 + timedelta(days=1)]))
    return start, stop


@public.get("/exports", response_model=ExportList, summary="List your exports")
def list_exports(
    request: Request,
    name: str | None = None,
    status: str | None = None,
    application: str | None = None,
    resource: str | None = None,
    created_at: str | None = Query(None, description="A day (YYYY-MM-DD) the export was created on"),
    created_at_from: str | None = None,
    created_at_to: str | None = None,
    expires_at: str | None = Query(None, description="A day (YYYY-MM-DD) the export expires on"),
    expires_at_from: str | None = None,
    expires_at_to: str | None = None,
    limit: int = Query(100, description="Page size, 1..1000"),
    offset: int = Query(0, description="Rows to skip"),
    sort: str = Query("created_at", description="name | created_at | expires_at"),
    dir: str = Query("asc", description="asc | desc"),
    identity: Identity = Depends(current_identity),
    session: Session = Depends(db_session),
) -> ExportList:
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be between 1 and 1000")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    if sort not in queries.SORTS:
        raise BadRequest(f"sort must be one of {', '.join(queries.SORTS)}")
    if dir not in ("asc", "desc"):
        raise BadRequest("dir must be asc or desc")
    if status is not None and status not in {s.value for s in ExportStatus}:
        raise BadRequest(f"status must be one of {', '.join(s.value for s in ExportStatus)}")
    c_from, c_to = _range(created_at, created_at_from, created_at_to, "created_at")
    e_from, e_to = _range(expires_at, expires_at_from, expires_at_to, "expires_at")
    filters = queries.ListFilters(name, status, application, resource, c_from, c_to, e_from, e_to)
    count, rows = queries.list_owned(session, identity, filters, sort=sort, descending=dir == "desc",
                                     limit=limit, offset=offset)
    return ExportList(meta=ListMeta(count=count), links=_links(request, count, limit, offset),
                      data=[_meta(e) for e in rows])


def _links(request: Request, count: int, limit: int, offset: int) -> Links:
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]

    def at(off: int) -> str:
        return f"{request.url.path}?{urlencode([*params, ('limit', limit), ('offset', off)])}"

    last = max(0, (count - 1) // limit * limit)
    return Links(
        first=at(0),
        next=at(offset + limit) if offset + limit < count else None,
        previous=at(max(0, offset - limit)) if offset > 0 else None,
        last=at(last),
    )


@public.get("/exports/{export_id}/status", response_model=ExportStatusOut, summary="An export and its sources")
def export_status(export_id: str, identity: Identity = Depends(current_identity),
                  session: Session = Depends(db_session)) -> ExportStatusOut:
    e = queries.get_owned(session, identity, export_id)
    return ExportStatusOut(
        **_meta(e).model_dump(),
        sources=[SourceStatusOut(id=s.id, application=s.application, resource=s.resource, filters=s.filters or {},
                                 status=s.status.value, message=s.message, error=s.error) for s in e.sources],
    )


@public.get("/exports/{export_id}", summary="Download the export's zip",
            responses={200: {"content": {"application/zip": {}}}, 409: {"description": "not ready yet"}})
def download(export_id: str, identity: Identity = Depends(current_identity),
             session: Session = Depends(db_session)) -> FileResponse:
    e = queries.get_owned(session, identity, export_id)
    path = queries.package_path(e)
    # streamed from disk in chunks by FileResponse, never read whole
    return FileResponse(path, media_type="application/zip", filename=f"{e.id}.zip")


@public.delete("/exports/{export_id}", status_code=202, response_model=Accepted, summary="Delete an export")
def delete(export_id: str, identity: Identity = Depends(current_identity),
           session: Session = Depends(db_session)) -> Accepted:
    e = queries.get_owned(session, identity, export_id)
    queries.delete_export(session, e)
    return Accepted(message=f"export {export_id} deleted")


# ------------------------------------------------------------------ source applications ----------------------------


@internal.post("/{export_id}/{application}/{source_id}/upload", status_code=202, response_model=Accepted,
               summary="Send a source's data (raw json or csv body, streamed)",
               openapi_extra={"requestBody": {"content": {"application/json": {}, "text/csv": {}}}})
async def upload(export_id: str, source_id: str, request: Request,
                 application: str = Depends(source_application)) -> Accepted:
    target = await run_in_threadpool(find_target, export_id, application, source_id)
    limit = get_settings().max_upload_bytes
    too_large = f"the upload is larger than the limit of {limit} bytes (GEOEXPORT_MAX_UPLOAD_BYTES)"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await run_in_threadpool(fail_source, target, too_large, 413)
        raise PayloadTooLarge(too_large)
    tmp = temp_path(target)
    size = 0
    try:
        with tmp.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    break
                f.write(chunk)
    except ClientDisconnect as exc:
        tmp.unlink(missing_ok=True)
        raise BadRequest("the upload was interrupted") from exc
    if size > limit:
        tmp.unlink(missing_ok=True)
        await run_in_threadpool(fail_source, target, too_large, 413)
        raise PayloadTooLarge(too_large)
    try:
        stored = await run_in_threadpool(complete_from_file, target, tmp)
    except MalformedResult as exc:
        raise BadRequest(f"malformed {target.format} result: {exc}; the source is marked failed") from exc
    if not stored:
        raise Gone(f"source {source_id} already finished; the result was not taken")
    return Accepted(message=f"result of source {source_id} accepted ({size} bytes)")


@internal.post("/{export_id}/{application}/{source_id}/error", status_code=202, response_model=Accepted,
               summary="Report that a source could not produce its data")
def error(export_id: str, source_id: str, body: ResultError,
          application: str = Depends(source_application)) -> Accepted:
    target = find_target(export_id, application, source_id)
    if not fail_source(target, body.message, _plain(body.error)):
        raise Gone(f"source {source_id} already finished; the error was not taken")
    return Accepted(message=f"error of source {source_id} recorded")


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool, dict, list)) else str(value)
