"""The raster catalog: registering layers (what a map package's ``dbId`` names).

Shared by the API (``POST /layers``) and the CLI (``geoexport layers add``) so both
refuse the same bad sources with the same messages.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from shapely.geometry import box, mapping, shape
from shapely.validation import explain_validity
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import ClientError
from core.models import Layer, MapJob
from tiling.inspect import RasterError, inspect_raster


class CatalogError(ClientError, ValueError):
    """The client's layer registration cannot be accepted (a 400)."""

    status = 400


def _resolve_source(source: str) -> str:
    if "://" in source or source.startswith("/vsi"):
        return source
    return str(Path(source).expanduser().resolve())


def parse_footprint(geojson: dict[str, Any]) -> Any:
    try:
        geom = shape(geojson)
    except Exception as exc:
        raise CatalogError(f"footprint is not a GeoJSON geometry: {exc}") from exc
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise CatalogError(f"footprint must be a Polygon or MultiPolygon, got {geom.geom_type}")
    if geom.is_empty:
        raise CatalogError("footprint is empty")
    if not geom.is_valid:
        raise CatalogError(f"footprint is not a valid polygon: {explain_validity(geom)}")
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise CatalogError("footprint must be in EPSG:4326 longitude/latitude degrees")
    return geom


def register_layer(
    session: Session,
    source: str,
    *,
    product_id: str | None = None,
    product_name: str | None = None,
    product_version: str | None = None,
    footprint: dict[str, Any] | None = None,
) -> Layer:
    source = _resolve_source(source)
    try:
        info = inspect_raster(source)
    except RasterError as exc:
        raise CatalogError(f"cannot read raster source {source!r}: {exc}") from exc

    raster_bounds = box(*info.bounds_4326)
    if footprint is not None:
        geom = parse_footprint(footprint)
        if not geom.intersects(raster_bounds):
            raise CatalogError("footprint does not overlap the raster")
        geom = geom.intersection(raster_bounds)
        footprint_geojson = mapping(geom)
    else:
        footprint_geojson = info.footprint

    name = product_name or Path(source.rstrip("/")).stem or "layer"
    layer = Layer(
        id=uuid.uuid4(),
        source=source,
        product_id=product_id or name,
        product_name=name,
        product_version=product_version or "1.0",
        footprint=dict(footprint_geojson),
        bounds=list(shape(footprint_geojson).bounds),
        max_resolution=info.max_resolution,
        max_zoom=info.max_zoom,
        bands=info.bands,
        dtype=str(info.dtype),
    )
    session.add(layer)
    session.flush()
    return layer


def layer_in_use(session: Session, layer_id: uuid.UUID) -> bool:
    return session.scalar(select(MapJob.id).where(MapJob.layer_id == layer_id).limit(1)) is not None
