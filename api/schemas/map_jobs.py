"""Wire schemas of the map-package API (exporter-trigger 2.2.0, kept compatible)."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExportGetMap(BaseModel):
    model_config = ConfigDict(extra="ignore")

    dbId: uuid.UUID = Field(description="ID as the primary key from the Raster Catalog")
    bbox: list[float] = Field(description="[minx, miny, maxx, maxy] in EPSG:4326 degrees")
    targetResolution: float = Field(description="Degrees per pixel of the finest zoom level")
    callbackURLs: list[str] = Field(description="URLs POSTed when the package is finished or failed")
    crs: str = "EPSG:4326"
    priority: int = Field(0, ge=0, le=999_999_999, description="Higher runs first when jobs wait")

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, v: list[float]) -> list[float]:
        if len(v) != 4:
            raise ValueError("must have exactly 4 numbers [minx, miny, maxx, maxy]")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("must contain finite numbers")
        minx, miny, maxx, maxy = v
        if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
            raise ValueError("longitudes must be within [-180, 180]")
        if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
            raise ValueError("latitudes must be within [-90, 90]")
        if minx >= maxx or miny >= maxy:
            raise ValueError("must be ordered [minx, miny, maxx, maxy] with minx < maxx and miny < maxy")
        return v

    @field_validator("targetResolution")
    @classmethod
    def _resolution(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("must be a positive number of degrees per pixel")
        if v > 0.703125 * (1 + 1e-9):
            raise ValueError("is out of range: the coarsest resolution is 0.703125 (zoom 0)")
        return v

    @field_validator("crs")
    @classmethod
    def _crs(cls, v: str) -> str:
        if v.upper() != "EPSG:4326":
            raise ValueError(f"{v!r} is not supported; supported: EPSG:4326")
        return "EPSG:4326"

    @field_validator("callbackURLs")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for url in v:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http(s) URL")
        return list(dict.fromkeys(v))


class CreateGpkgJobResponse(BaseModel):
    status: Literal["In-Progress"] = "In-Progress"
    id: uuid.UUID
    taskIds: list[uuid.UUID]


class NaiveCacheJobResponse(BaseModel):
    status: Literal["Completed"] = "Completed"
    fileUri: str
    expirationTime: datetime
    fileSize: int
    dbId: uuid.UUID
    packageName: str
    bbox: list[float]
    targetResolution: float
    requestId: str
    success: bool = True
    errorReason: str | None = None


class TileCounts(BaseModel):
    planned: int
    done: int
    written: int


class TaskOut(BaseModel):
    id: uuid.UUID
    zoom: int
    tileRange: list[int] = Field(description="[minCol, minRow, maxCol, maxRow] inclusive")
    status: str
    tiles: TileCounts
    error: str | None = None


class CallbackAttemptOut(BaseModel):
    url: str
    attempt: int
    statusCode: int | None
    success: bool
    error: str | None
    at: datetime


class JobOut(BaseModel):
    id: uuid.UUID
    status: str
    percentage: float
    dbId: uuid.UUID
    bbox: list[float]
    snappedBbox: list[float]
    targetResolution: float
    crs: str
    zoom: int
    priority: int
    tileFormat: str
    tiles: TileCounts
    tasks: list[TaskOut]
    callbackURLs: list[str]
    callbacks: list[CallbackAttemptOut]
    flowRunId: str | None
    packageName: str
    fileUri: str | None = None
    fileSize: int | None = None
    sha256: str | None = None
    expirationTime: datetime | None = None
    errorReason: str | None = None
    createdAt: datetime
    startedAt: datetime | None = None
    completedAt: datetime | None = None


class StorageOut(BaseModel):
    free: int
    size: int
