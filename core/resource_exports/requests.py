"""New exports: validation, the rows, and one CloudEvents request message per source (in the outbox)."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.models.base import utcnow
from core.models.exports import Export, ExportSource, OutboxMessage
from core.resource_exports.errors import InvalidRequest
from core.resource_exports.identity import HEADER, Identity
from core.settings import get_settings

log = logging.getLogger("geoexport.exports")

FORMATS = ("json", "csv")
REQUEST_TYPE = "com.redhat.console.export-service.request"
EVENT_SOURCE = "urn:redhat:source:console:app:export-service"
DATASCHEMA = "https://console.redhat.com/api/schemas/apps/export-service/v1/resource-request.json"


@dataclass
class SourceRequest:
    application: str
    resource: str
    filters: Any = None
    expires: datetime | None = None


@dataclass
class NewExport:
    name: str
    format: str
    sources: list[SourceRequest] | None
    expires_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def validate(req: NewExport, now: datetime) -> datetime:
    """Check the request against the configured source applications; returns the expiry."""
    if not req.name or not req.name.strip():
        raise InvalidRequest("name must not be empty")
    fmt = (req.format or "").strip().lower()
    if fmt == "pdf":
        raise InvalidRequest("format pdf is not supported yet")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format {req.format!r} is not valid; use json or csv")
    if not req.sources:
        raise InvalidRequest("sources must contain at least one source")
    configured = get_settings().sources
    expiries = []
    if req.expires_at is not None:
        if _aware(req.expires_at) <= now:
            raise InvalidRequest("expires_at is in the past")
        expiries.append(_aware(req.expires_at))
    for i, src in enumerate(req.sources):
        where = f"sources[{i}]"
        if src.filters is not None and not isinstance(src.filters, dict):
            raise InvalidRequest(f"{where}.filters must be a JSON object")
        if src.application not in configured:
            known = ", ".join(sorted(configured)) or "none configured"
            raise InvalidRequest(
                f"{where}.application {src.application!r} is not a known source application (known: {known})"
            )
        if src.resource not in configured[src.application]:
            raise InvalidRequest(
                f"{where}.resource {src.resource!r} is not a resource of application {src.application!r} "
                f"(known: {', '.join(configured[src.application]) or 'none'})"
            )
        if src.expires is not None:
            if _aware(src.expires) <= now:
                raise InvalidRequest(f"{where}.expires is in the past")
            expiries.append(_aware(src.expires))
    # The export lives as long as its shortest-lived part was asked to.
    return min(expiries) if expiries else now + timedelta(days=get_settings().export_ttl_days)


def request_message(export: Export, source: ExportSource, identity: Identity) -> dict[str, Any]:
    """The CloudEvents 1.0 request a source application receives on platform.export.requests."""
    return {
        "id": str(uuid.uuid4()),
        "source": EVENT_SOURCE,
        "subject": f"urn:redhat:subject:export-service:request:{export.id}",
        "specversion": "1.0",
        "type": REQUEST_TYPE,
        "time": export.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "redhatorgid": export.org_id,
        "dataschema": DATASCHEMA,
        "data": {
            "resource_request": {
                "uuid": str(source.id),
                "export_request_uuid": str(export.id),
                "application": source.application,
                "resource": source.resource,
                "format": export.format,
                HEADER: identity.raw,
                "filters": source.filters or {},
            }
        },
    }


def create_export(session: Session, identity: Identity, req: NewExport) -> Export:
    """Add the export, its sources and their request messages; the caller's commit makes them one unit."""
    now = utcnow()
    expires_at = validate(req, now)
    assert req.sources
    export = Export(
        id=uuid.uuid4(), name=req.name.strip(), format=req.format.strip().lower(), org_id=identity.org_id,
        username=identity.username, identity_type=identity.type, created_at=now, expires_at=expires_at,
    )
    export.sources = [
        ExportSource(id=uuid.uuid4(), position=i, application=s.application, resource=s.resource,
                     filters=s.filters or {})
        for i, s in enumerate(req.sources)
    ]
    session.add(export)
    topic = get_settings().kafka_requests_topic
    for src in export.sources:
        session.add(OutboxMessage(
            export_id=export.id, topic=topic, key=str(export.id),
            value=json.dumps(request_message(export, src, identity)),
            headers=[["application", src.application], [HEADER, identity.raw]],
        ))
    session.flush()
    log.info("export created export=%s org=%s user=%s sources=%d format=%s", export.id, export.org_id,
             export.username, len(export.sources), export.format)
    return export
