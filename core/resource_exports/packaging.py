"""The export zip: one file per completed source, ``meta.json`` and a ``README.md``.

Written streamed (ZIP64, data copied in chunks — never a whole file in memory) under a
temporary name beside the final one, and renamed only in the same transaction that marks
the export finished, so a reader never sees half a package.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from core.db import session_scope
from core.models.base import utcnow
from core.models.exports import Export, ExportStatus, SourceStatus
from core.resource_exports import files
from core.storage import Storage

log = logging.getLogger("geoexport.exports")

CHUNK = 1 << 20
FINAL = (ExportStatus.COMPLETE, ExportStatus.PARTIAL, ExportStatus.FAILED)


@dataclass(frozen=True)
class SourceSnapshot:
    id: str
    application: str
    resource: str
    filters: dict[str, Any]
    status: str
    message: str | None
    error: Any


@dataclass(frozen=True)
class ExportSnapshot:
    id: str
    name: str
    format: str
    status: str
    org_id: str
    username: str
    created_at: datetime
    sources: list[SourceSnapshot]


@dataclass(frozen=True)
class PackageResult:
    export_id: str
    status: str
    file_size: int
    files: list[str]
    failed: int


def snapshot(export_id: str) -> ExportSnapshot | None:
    with session_scope() as s:
        e = s.get(Export, uuid.UUID(export_id))
        if e is None:
            return None
        return ExportSnapshot(
            id=str(e.id), name=e.name, format=e.format, status=e.status.value, org_id=e.org_id,
            username=e.username, created_at=e.created_at,
            sources=[SourceSnapshot(str(x.id), x.application, x.resource, dict(x.filters or {}), x.status.value,
                                    x.message, x.error) for x in e.sources],
        )


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "data"


def file_names(exp: ExportSnapshot) -> dict[str, str]:
    """Archive names ``<application>-<resource>.<fmt>``, with -2, -3 … when a pair repeats."""
    names: dict[str, str] = {}
    used: set[str] = {"meta.json", "README.md"}
    for src in exp.sources:
        if src.status != SourceStatus.COMPLETE.value:
            continue
        base = f"{_safe(src.application)}-{_safe(src.resource)}"
        name, n = f"{base}.{exp.format}", 1
        while name in used:
            n += 1
            name = f"{base}-{n}.{exp.format}"
        used.add(name)
        names[src.id] = name
    return names


def meta(exp: ExportSnapshot, names: dict[str, str], export_date: datetime) -> dict[str, Any]:
    return {
        "export_id": exp.id,
        "name": exp.name,
        "format": exp.format,
        "exported_by": exp.username,
        "export_date": export_date.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "org_id": exp.org_id,
        "file_meta": [
            {"filename": names[s.id], "application": s.application, "resource": s.resource, "filters": s.filters}
            for s in exp.sources if s.id in names
        ],
        "failed_files": [
            {"application": s.application, "resource": s.resource, "message": s.message, "error": s.error}
            for s in exp.sources if s.status == SourceStatus.FAILED.value
        ],
        "help_string": "file_meta lists the files of this archive; failed_files the sources that sent no data.",
    }


def readme(exp: ExportSnapshot, doc: dict[str, Any]) -> str:
    lines = [
        f"# Export: {exp.name}", "",
        f"- export id: `{exp.id}`",
        f"- exported by: {doc['exported_by']} (organization {doc['org_id']})",
        f"- export date: {doc['export_date']}",
        f"- format: {exp.format}", "",
        "## Files", "",
    ]
    if doc["file_meta"]:
        lines += ["| file | application | resource | filters |", "| --- | --- | --- | --- |"]
        lines += [f"| {f['filename']} | {f['application']} | {f['resource']} | `{json.dumps(f['filters'])}` |"
                  for f in doc["file_meta"]]
    else:
        lines.append("No source sent data, so this archive holds no data files.")
    lines += ["", "## Failed sources", ""]
    if doc["failed_files"]:
        lines += ["| application | resource | message | error |", "| --- | --- | --- | --- |"]
        lines += [f"| {f['application']} | {f['resource']} | {f['message'] or ''} | {_cell(f['error'])} |"
                  for f in doc["failed_files"]]
    else:
        lines.append("None: every source completed.")
    lines += ["", "`meta.json` holds the same information in machine-readable form.", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def outcome(exp: ExportSnapshot) -> ExportStatus:
    done = sum(1 for s in exp.sources if s.status == SourceStatus.COMPLETE.value)
    if done == len(exp.sources):
        return ExportStatus.COMPLETE
    return ExportStatus.PARTIAL if done else ExportStatus.FAILED


def build_package(export_id: str) -> PackageResult | None:
    """Zip a finished export and publish it; None when the export is gone (deleted meanwhile)."""
    exp = snapshot(export_id)
    if exp is None:
        log.info("packaging skipped, export deleted export=%s", export_id)
        return None
    final = files.package_file(exp.id)
    if exp.status in {s.value for s in FINAL} and final.is_file():
        return PackageResult(exp.id, exp.status, final.stat().st_size, [], 0)  # already packaged (a retry)
    if any(s.status == SourceStatus.PENDING.value for s in exp.sources):
        raise RuntimeError(f"export {export_id} still has pending sources")
    names = file_names(exp)
    now = utcnow()
    doc = meta(exp, names, now)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Storage.temp_path_for(final)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for src in exp.sources:
                if src.id not in names:
                    continue
                path = files.source_file(exp.id, src.id, exp.format)
                info = zipfile.ZipInfo(names[src.id], date_time=now.timetuple()[:6])
                info.compress_type = zipfile.ZIP_DEFLATED
                # force_zip64: the size is not known to the writer up front and may pass 4 GB
                with path.open("rb") as f, zf.open(info, "w", force_zip64=True) as dst:
                    while chunk := f.read(CHUNK):
                        dst.write(chunk)
            zf.writestr("meta.json", json.dumps(doc, indent=2, default=str))
            zf.writestr("README.md", readme(exp, doc))
        size = tmp.stat().st_size
        status = outcome(exp)
        with session_scope() as s:
            won = s.execute(
                update(Export).where(Export.id == uuid.UUID(exp.id), Export.status.not_in(FINAL))
                .values(status=status, completed_at=now, file_size=size, error=None)
            ).rowcount
            if won == 1:
                Storage.publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if won != 1:
        log.info("packaging dropped, export deleted or already final export=%s", export_id)
        return None
    Storage.remove(files.upload_dir(exp.id))  # the zip now holds the data
    log.info("export packaged export=%s status=%s files=%d failed=%d bytes=%d", exp.id, status.value,
             len(names), len(doc["failed_files"]), size)
    return PackageResult(exp.id, status.value, size, list(names.values()), len(doc["failed_files"]))


def mark_failed(export_id: str, reason: str) -> None:
    """Packaging itself broke (disk full, files missing): the export fails with the reason."""
    with session_scope() as s:
        s.execute(update(Export).where(Export.id == uuid.UUID(export_id), Export.status.not_in(FINAL))
                  .values(status=ExportStatus.FAILED, completed_at=utcnow(), error=reason[:4000]))
