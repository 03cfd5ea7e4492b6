"""Wire schemas of the resource-export API (compatible with the console export service)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    application: str = Field(description="A configured source application (GEOEXPORT_SOURCES)")
    resource: str = Field(description="One of the application's resources")
    filters: Any = Field(None, description="Application-specific JSON object, passed on unchanged")
    expires: datetime | None = Field(None, description="Optional expiry; the export expires at the earliest one")


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="A human-readable name")
    format: str = Field(description='"json" or "csv" ("pdf" is not supported yet)')
    expires_at: datetime | None = Field(None, description="Default: GEOEXPORT_EXPORT_TTL_DAYS (7) days from now")
    sources: list[SourceIn] | None = None


class SourceOut(BaseModel):
    id: uuid.UUID
    application: str
    resource: str
    filters: dict[str, Any]
    status: str


class SourceStatusOut(SourceOut):
    message: str | None = None
    error: Any = None


class ExportOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    expires_at: datetime
    format: str
    status: str
    sources: list[SourceOut]


class ExportMeta(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    completed_at: datetime | None = None
    expires_at: datetime
    format: str
    status: str


class ExportStatusOut(ExportMeta):
    sources: list[SourceStatusOut]


class ListMeta(BaseModel):
    count: int


class Links(BaseModel):
    first: str
    next: str | None = None
    previous: str | None = None
    last: str


class ExportList(BaseModel):
    meta: ListMeta
    links: Links
    data: list[ExportMeta]


class ResultError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str = Field(description="What went wrong, shown to the user")
    error: Any = Field(None, description="An error code or detail of the source application")


class Accepted(BaseModel):
    message: str
