"""The demo raster layer that ``make run`` registers on first start."""

from __future__ import annotations

from sqlalchemy import select

from core.catalog import register_layer
from core.db import session_scope
from core.migrate import upgrade
from core.models import Layer
from core.settings import get_settings
from tiling.demo import write_demo_cog

DEMO_PRODUCT_ID = "geoexport-demo"


def ensure_demo_layer() -> str:
    upgrade()
    path = get_settings().var_dir.resolve() / "demo" / "demo-rgb-z14.tif"
    with session_scope() as s:
        layer = s.scalar(select(Layer).where(Layer.product_id == DEMO_PRODUCT_ID))
        if layer is not None and path.exists():
            return str(layer.id)
        if layer is not None:
            s.delete(layer)
            s.flush()
        if not path.exists():
            write_demo_cog(path)
        layer = register_layer(s, str(path), product_id=DEMO_PRODUCT_ID, product_name="demo",
                               product_version="1.0")
        return str(layer.id)
