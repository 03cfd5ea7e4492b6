"""Errors of the shared logic that a client caused; each carries the HTTP status the API answers with.

The API installs one handler for them (api/errors.py), so code in core/ can refuse a request
without knowing about HTTP frameworks.
"""

from __future__ import annotations


class ClientError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
