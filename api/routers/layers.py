from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import principal, require
from api.deps import db_session
from api.errors import BadRequest, Conflict, NotFound
from api.schemas.layers import LayerCreate, LayerOut
from core import map_packages
from core.catalog import register_layer
from core.models import Layer, MapJob
from core.models.map_jobs import ACTIVE_STATUSES
from core.storage import get_storage

router = APIRouter(prefix="/layers", tags=["catalog"])


@router.post("", status_code=201, response_model=LayerOut, dependencies=[Depends(require("admin"))])
def add_layer(body: LayerCreate, session: Session = Depends(db_session)) -> LayerOut:
    layer = register_layer(  # a CatalogError is a 400 with its message (api/errors.py)
        session, body.source, product_id=body.productId, product_name=body.productName,
        product_version=body.productVersion, footprint=body.footprint,
    )
    session.commit()
    return LayerOut.of(layer)


@router.get("", response_model=list[LayerOut], dependencies=[Depends(principal)])
def list_layers(session: Session = Depends(db_session)) -> list[LayerOut]:
    return [LayerOut.of(x) for x in session.scalars(select(Layer).order_by(Layer.created_at))]


def _layer(session: Session, db_id: str) -> Layer:
    try:
        key = uuid.UUID(db_id)
    except ValueError as exc:
        raise BadRequest(f"dbId {db_id!r} is not a UUID") from exc
    layer = session.get(Layer, key)
    if layer is None:
        raise NotFound(f"layer {db_id} not found in the catalog")
    return layer


@router.get("/{db_id}", response_model=LayerOut, dependencies=[Depends(principal)])
def get_layer(db_id: str, session: Session = Depends(db_session)) -> LayerOut:
    return LayerOut.of(_layer(session, db_id))


@router.delete("/{db_id}", dependencies=[Depends(require("admin"))])
def delete_layer(db_id: str, session: Session = Depends(db_session)) -> dict[str, str]:
    layer = _layer(session, db_id)
    jobs = session.scalars(select(MapJob).where(MapJob.layer_id == layer.id)).all()
    if any(j.status in ACTIVE_STATUSES for j in jobs):
        raise Conflict("the layer has map packages in progress; cancel them (DELETE /create/{id}) first")
    storage = get_storage()
    for job in jobs:  # finished packages of a removed layer can no longer be served from the cache
        storage.remove(map_packages.package_path(job.package_name))
        storage.remove(map_packages.sidecar_path(job.package_name))
        storage.remove(map_packages.job_work_dir(job.id))
        session.delete(job)
    session.flush()
    session.delete(layer)
    session.commit()
    return {"dbId": str(layer.id), "message": "layer deleted"}
