"""The public API's caller: the ``x-rh-identity`` header (missing → 401, undecodable or incomplete → 400)."""

from __future__ import annotations

from fastapi import Header

from api.errors import BadRequest, Unauthorized
from core.resource_exports.identity import HEADER, Identity, IdentityError, decode_identity


def current_identity(x_rh_identity: str | None = Header(None, alias=HEADER)) -> Identity:
    if x_rh_identity is None or not x_rh_identity.strip():
        raise Unauthorized(f"the {HEADER} header is required")
    try:
        return decode_identity(x_rh_identity)
    except IdentityError as exc:
        raise BadRequest(str(exc)) from exc
