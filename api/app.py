"""The FastAPI application: routers, error handlers, start-up checks."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routers import downloads, layers, map_jobs, ops

log = logging.getLogger("geoexport.api")


def create_app() -> FastAPI:
    from core.settings import get_settings

    if get_settings().auth == "off":
        log.warning("!!! GEOEXPORT_AUTH=off: every caller is treated as an admin; never run like this in production")
    app = FastAPI(
        title="geoexport",
        version="0.1.0",
        description="Map packages (GeoPackage) and resource exports (zip), orchestrated by Prefect.",
    )
    install_error_handlers(app)
    ops.install_request_metrics(app)
    app.include_router(ops.router)
    app.include_router(layers.router)
    app.include_router(map_jobs.router)
    app.include_router(downloads.router)
    _include_optional(app)

    return app


def _include_optional(app: FastAPI) -> None:
    """Routers of capabilities that register themselves in api/routers/ (resource exports, ...)."""
    try:
        from api.routers import exports
    except ImportError:
        return
    for r in getattr(exports, "routers", [getattr(exports, "router", None)]):
        if r is not None:
            app.include_router(r)


app = create_app()
