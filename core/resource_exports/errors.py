"""Errors of the resource-export logic; each carries the HTTP status the API answers with."""

from __future__ import annotations


class ExportError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
