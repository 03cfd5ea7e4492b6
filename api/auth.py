"""Who is calling the map-package side: a JWT in ``x-api-key`` or ``?token=`` (403 without one)."""

from __future__ import annotations

import logging

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, APIKeyQuery

from api.errors import Forbidden
from core.settings import get_settings
from core.tokens import ANONYMOUS_ADMIN, Principal, TokenError, verify

log = logging.getLogger("geoexport.auth")

# auto_error=False: we answer with our own {"message"} bodies; these objects make /docs offer "Authorize"
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, scheme_name="apiKeyHeader",
                              description="JWT (map-package side)")
token_query = APIKeyQuery(name="token", auto_error=False, scheme_name="tokenQuery",
                          description="JWT as a query parameter (download links, map clients)")


def principal(
    request: Request,
    header: str | None = Depends(api_key_header),
    query: str | None = Depends(token_query),
) -> Principal:
    if get_settings().auth == "off":
        return ANONYMOUS_ADMIN
    token = header or query
    if not token:
        raise Forbidden("missing token: send a JWT in the x-api-key header or the token query parameter")
    try:
        who = verify(token)
    except TokenError as exc:
        log.info("token refused path=%s reason=%s", request.url.path, exc)
        raise Forbidden(str(exc)) from exc
    request.state.principal = who
    return who


def require(*roles: str):  # type: ignore[no-untyped-def]
    """A dependency: a valid token that has one of ``roles`` (admin has every role)."""

    def check(who: Principal = Depends(principal)) -> Principal:
        if roles and not who.has(*roles):
            names = " or ".join(dict.fromkeys(f"'{r}'" for r in (*roles, "admin")))
            raise Forbidden(f"token of {who.subject!r} lacks the {names} role")
        return who

    return check
