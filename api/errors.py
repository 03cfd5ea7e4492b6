"""One exception → status map for the whole app; every client error is ``{"message": ...}``."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ClientError

log = logging.getLogger("geoexport.api")


class ApiError(ClientError):
    """An error the API answers with ``{"message": ...}`` and the status of its class."""


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class PayloadTooLarge(ApiError):
    status = 413


class InsufficientStorage(ApiError):
    status = 507


class ServiceUnavailable(ApiError):
    status = 503


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> str:
    msgs = []
    for err in exc.errors():
        where = _loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid value")
        if err.get("type") == "json_invalid":
            msgs.append("request body is not valid JSON")
            continue
        if err.get("type") == "missing":
            msgs.append(f"{where} is required")
            continue
        msg = msg.removeprefix("Value error, ")
        msgs.append(f"{where}: {msg}")
    return "; ".join(dict.fromkeys(msgs)) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.middleware("http")
    async def _refuse_control_characters(request: Request, call_next):  # type: ignore[no-untyped-def]
        # no route takes NUL or other control characters in its path or query: refuse them before
        # they reach a database that cannot store them
        raw = request.scope.get("path", "") + "?" + request.scope.get("query_string", b"").decode("latin-1")
        if any(ord(c) < 32 for c in raw) or "%00" in raw:
            return JSONResponse({"message": "the URL contains control characters"}, status_code=400)
        return await call_next(request)

    @app.exception_handler(ClientError)
    async def _client_error(_: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": validation_message(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such resource"
        return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # the database refused a value the client sent (a NUL character, a number out of range)
        log.info("database refused a client value path=%s error=%s", request.url.path, exc.orig)
        return JSONResponse({"message": "the request contains a value the database cannot store "
                                        "(for example a NUL character)"}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Real internal faults only. The client gets an id to quote; the traceback stays in our logs.
        error_id = uuid.uuid4().hex[:12]
        log.exception("internal error id=%s path=%s", error_id, request.url.path)
        return JSONResponse(
            {"message": "internal error", "stacktrace": f"{type(exc).__name__} (error id {error_id}, see server log)"},
            status_code=500,
        )
