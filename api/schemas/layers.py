from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LayerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="Path or URL of a GeoTIFF/COG readable by rasterio")
    productId: str | None = None
    productName: str | None = None
    productVersion: str | None = None
    footprint: dict[str, Any] | None = Field(None, description="GeoJSON Polygon/MultiPolygon in EPSG:4326")


class LayerOut(BaseModel):
    dbId: uuid.UUID
    productId: str
    productName: str
    productVersion: str
    footprint: dict[str, Any]
    bounds: list[float]
    maxResolution: float
    maxZoom: int
    bands: int
    dtype: str
    createdAt: datetime

    @classmethod
    def of(cls, layer: Any) -> LayerOut:
        return cls(
            dbId=layer.id,
            productId=layer.product_id,
            productName=layer.product_name,
            productVersion=layer.product_version,
            footprint=layer.footprint,
            bounds=layer.bounds,
            maxResolution=layer.max_resolution,
            maxZoom=layer.max_zoom,
            bands=layer.bands,
            dtype=layer.dtype,
            createdAt=layer.created_at,
        )
