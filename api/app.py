"""The FastAPI application: routers, error handlers, start-up checks."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routers import downloads, layers, map_jobs, ops

log = logging.getLogger("geoexport.api")


def _warm_up() -> None:
    """Import Prefect's client ahead of the first launch: it costs ~0.8 s once, which the first
    POST /create would otherwise pay. And share one verified TLS context between Prefect's API clients:
    every launch (``run_deployment``) and cancellation makes a new client, which parsed the CA bundle
    again (~55 ms of each POST /create, even against a plain-http Prefect API; see flows.warm_start_tls)."""
    try:
        import prefect.deployments  # noqa: F401

        import flows.warm_start_tls  # noqa: F401
    except Exception as exc:  # the API still serves; launching will report the problem
        log.warning("prefect warm-up failed: %s", exc)


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    threading.Thread(target=_warm_up, name="prefect-warm-up", daemon=True).start()
    yield


def create_app() -> FastAPI:
    from core.settings import get_settings

    if get_settings().auth == "off":
        log.warning("!!! GEOEXPORT_AUTH=off: every caller is treated as an admin; never run like this in production")
    app = FastAPI(
        title="geoexport",
        version="0.1.0",
        description="Map packages (GeoPackage) and resource exports (zip), orchestrated by Prefect.",
        lifespan=_lifespan,
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
