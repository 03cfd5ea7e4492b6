"""A message of ``platform.export.results`` → the result path shared with the upload API.

Headers: ``export_request_uuid``, ``uuid`` (source id), ``application``, ``resource``,
``status`` (``complete`` | ``failed``), optionally ``part``/``parts``. The value is the
data in the export's format, or ``{message, error}`` for ``failed``. Parts are kept as
files with a row each (unique on source and part, so a redelivered part adds nothing) and
joined in part order once all have arrived.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.db import session_scope
from core.models.exports import ExportResultPart
from core.resource_exports import files
from core.resource_exports.errors import ExportError
from core.resource_exports.formats import MalformedResult
from core.resource_exports.results import Target, complete_from_file, fail_source, find_target, temp_path
from core.settings import get_settings
from core.storage import Storage

log = logging.getLogger("geoexport.exports")

COPY_CHUNK = 1 << 20


class BadMessage(ValueError):
    """A message that can never be stored (retrying it would not help)."""


def header_map(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers or []:
        if v is None:
            continue
        out[k.lower()] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return out


def _need(h: dict[str, str], name: str) -> str:
    value = h.get(name, "").strip()
    if not value:
        raise BadMessage(f"result message without the {name} header")
    return value


def _failure(value: bytes | None) -> tuple[str, Any]:
    try:
        doc = json.loads(value or b"{}")
    except ValueError:
        return (value or b"").decode("utf-8", "replace")[:4000] or "the source application failed", None
    if isinstance(doc, dict):
        return str(doc.get("message") or "the source application failed"), doc.get("error")
    return str(doc), None


def ingest(headers: Iterable[tuple[str, Any]] | None, value: bytes | None) -> str:
    """Store one result message; returns what happened (for logs). Raises only for retryable faults."""
    h = header_map(headers)
    try:
        export_id, source_id = _need(h, "export_request_uuid"), _need(h, "uuid")
        application, status = _need(h, "application"), _need(h, "status").lower()
        target = find_target(export_id, application, source_id)
        if h.get("resource") and h["resource"] != target.resource:
            raise BadMessage(f"resource header {h['resource']!r} is not the source's resource {target.resource!r}")
        if status == "failed":
            message, error = _failure(value)
            fail_source(target, message, error)
            return "failed"
        if status not in ("complete", "success"):
            raise BadMessage(f"status header {status!r} is neither complete nor failed")
        if "parts" in h or "part" in h:
            return _ingest_part(target, h, value or b"")
        return _ingest_whole(target, value or b"")
    except (BadMessage, ExportError) as exc:
        log.warning("result message skipped export=%s source=%s reason=%s", h.get("export_request_uuid"),
                    h.get("uuid"), getattr(exc, "message", exc))
        return "skipped"


def _ingest_whole(target: Target, value: bytes) -> str:
    limit = get_settings().max_upload_bytes
    if len(value) > limit:
        fail_source(target, f"the result is larger than the limit of {limit} bytes", 413)
        return "failed"
    tmp = temp_path(target)
    tmp.write_bytes(value)
    try:
        complete_from_file(target, tmp)
    except MalformedResult:
        return "failed"
    return "complete"


def _ingest_part(target: Target, h: dict[str, str], value: bytes) -> str:
    try:
        part, parts = int(h.get("part", "")), int(h.get("parts", ""))
    except ValueError as exc:
        raise BadMessage("part and parts headers must both be integers") from exc
    # Parts may be numbered from 0 or from 1: they are joined in sorted order once `parts` distinct ones arrived.
    if parts < 1 or not (0 <= part <= parts):
        raise BadMessage(f"part {part} of {parts} is out of range")
    path = files.part_file(target.export_id, target.source_id, part)
    tmp = temp_path(target)
    tmp.write_bytes(value)
    try:
        with session_scope() as s:
            s.add(ExportResultPart(source_id=target.source_id, part=part, parts=parts, size=len(value)))
            s.flush()
            Storage.publish(tmp, path)
    except IntegrityError:
        tmp.unlink(missing_ok=True)
        log.info("duplicate part ignored export=%s source=%s part=%d", target.export_id, target.source_id, part)
        return "duplicate"
    with session_scope() as s:
        got, total = s.execute(
            select(func.count(), func.coalesce(func.sum(ExportResultPart.size), 0))
            .where(ExportResultPart.source_id == target.source_id)
        ).one()
        numbers = list(s.scalars(select(ExportResultPart.part).where(ExportResultPart.source_id == target.source_id)
                                 .order_by(ExportResultPart.part)))
    limit = get_settings().max_upload_bytes
    if total > limit:
        fail_source(target, f"the result is larger than the limit of {limit} bytes", 413)
        _remove_parts(target, numbers)
        return "failed"
    if got < parts:
        return f"part {part} of {parts}"
    joined = temp_path(target)
    with joined.open("wb") as out:
        for n in numbers:
            with files.part_file(target.export_id, target.source_id, n).open("rb") as f:
                while chunk := f.read(COPY_CHUNK):
                    out.write(chunk)
    try:
        complete_from_file(target, joined)
        result = "complete"
    except MalformedResult:
        result = "failed"
    _remove_parts(target, numbers)
    return result


def _remove_parts(target: Target, numbers: list[int]) -> None:
    for n in numbers:
        files.part_file(target.export_id, target.source_id, n).unlink(missing_ok=True)
