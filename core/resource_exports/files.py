"""Where an export's files live in storage: uploads/<export>/… while collecting, exports/<export>.zip after."""

from __future__ import annotations

import uuid
from pathlib import Path

from core.storage import get_storage


def upload_dir(export_id: uuid.UUID | str) -> Path:
    return get_storage().path("uploads", str(export_id))


def source_file(export_id: uuid.UUID | str, source_id: uuid.UUID | str, fmt: str) -> Path:
    return upload_dir(export_id) / f"{source_id}.{fmt}"


def part_file(export_id: uuid.UUID | str, source_id: uuid.UUID | str, part: int) -> Path:
    return upload_dir(export_id) / f"{source_id}.part{part:06d}"


def package_file(export_id: uuid.UUID | str) -> Path:
    return get_storage().path("exports", f"{export_id}.zip")
