from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Double, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, utcnow


class Layer(Base):
    """A raster layer of the catalog: what a map package's ``dbId`` names."""

    __tablename__ = "layers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    source: Mapped[str] = mapped_column(String(2048))
    product_id: Mapped[str] = mapped_column(String(255))
    product_name: Mapped[str] = mapped_column(String(255))
    product_version: Mapped[str] = mapped_column(String(64))
    footprint: Mapped[dict] = mapped_column(JSON)
    bounds: Mapped[list] = mapped_column(JSON)
    max_resolution: Mapped[float] = mapped_column(Double)
    max_zoom: Mapped[int]
    bands: Mapped[int]
    dtype: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
