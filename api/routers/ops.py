"""Operations: liveness, readiness of every dependency, Prometheus metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from core.db import get_engine
from core.metrics import HTTP_LATENCY, HTTP_REQUESTS, REGISTRY
from core.storage import get_storage

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _check_database() -> str:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def _check_prefect() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set")
    r = httpx.get(f"{str(url).rstrip('/')}/health", timeout=3)
    r.raise_for_status()
    return "ok"


def _check_kafka() -> str:
    from core.kafka import bootstrap_servers, port_open

    for server in bootstrap_servers().split(","):
        host, _, port = server.strip().rpartition(":")
        if port_open(host or "127.0.0.1", int(port), timeout=2):
            return "ok"
    raise RuntimeError(f"no broker reachable at {bootstrap_servers()}")


def _check_storage() -> str:
    root = get_storage().root
    probe = root / f".ready-{os.getpid()}"
    probe.write_bytes(b"ok")
    probe.unlink()
    free, _ = get_storage().usage()
    return f"ok ({free} bytes free)"


CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "prefect": _check_prefect,
    "kafka": _check_kafka,
    "storage": _check_storage,
}


@router.get("/ready")
def ready() -> JSONResponse:
    """Every dependency the service needs, each reported; 503 when one is not reachable."""
    results: dict[str, dict[str, str]] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = {"status": "ok", "detail": check()}
        except Exception as exc:
            results[name] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    ok = all(r["status"] == "ok" for r in results.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": results}, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def install_request_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def _count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            # the route template, not the raw path, keeps label cardinality bounded
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(request.method, path, str(status)).inc()
            HTTP_LATENCY.labels(request.method, path).observe(time.perf_counter() - start)



