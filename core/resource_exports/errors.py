"""Errors of the resource-export logic; each carries the HTTP status the API answers with."""

from __future__ import annotations

from core.errors import ClientError


class ExportError(ClientError):
    status = 400


class InvalidRequest(ExportError):
    status = 400


class NotFound(ExportError):
    status = 404


class NotReady(ExportError):
    status = 409


class Finished(ExportError):
    """The source (or export) already finished: a late or repeated result."""

    status = 410


class TooLarge(ExportError):
    status = 413
