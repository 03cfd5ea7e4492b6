"""What the API and the flows both need to know about a map package: names, paths, payloads."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from core.models import JobStatus, MapJob
from core.settings import get_settings


def package_path(package_name: str) -> Path:
    return get_settings().packages_dir / package_name


def sidecar_path(package_name: str) -> Path:
    return get_settings().packages_dir / f"{package_name}.sha256.json"


def job_work_dir(job_id: Any) -> Path:
    return get_settings().work_dir / str(job_id)


def file_uri(package_name: str) -> str:
    return f"{get_settings().base_url}/downloads/{package_name}"


def make_package_name(product_id: str, product_version: str, zoom: int, job_id: Any) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{product_id}_{product_version}_z{zoom}").strip("-.")
    return f"{stem}_{str(job_id)[:8]}.gpkg"


def cache_key(layer_id: Any, crs: str, zoom: int, tile_range: tuple[int, int, int, int]) -> str:
    """Identical requests: same layer, crs, zoom and bbox snapped to the tile grid at that zoom."""
    raw = f"{layer_id}|{crs}|{zoom}|{','.join(map(str, tile_range))}"
    return hashlib.sha256(raw.encode()).hexdigest()


def job_payload(job: MapJob) -> dict[str, Any]:
    """The naiveCacheJobResponse fields, as sent to callbacks and returned on a cache hit."""
    completed = job.status == JobStatus.COMPLETED
    return {
        "status": job.status.value,
        "fileUri": file_uri(job.package_name) if completed else None,
        "expirationTime": job.expires_at.isoformat() if job.expires_at else None,
        "fileSize": job.file_size if completed else None,
        "dbId": str(job.layer_id),
        "packageName": job.package_name,
        "bbox": job.bbox,
        "targetResolution": job.target_resolution,
        "requestId": str(job.id),
        "success": completed,
        "errorReason": job.error_reason,
    }
