"""The internal API's caller: a source application proving itself with ``x-rh-exports-psk``.

``GEOEXPORT_PSKS`` is a list (any key may answer for any application) or a JSON map
application → key (a key answers only for its application: another's key is 403).
With no keys configured every request is refused — the internal API is never open.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Path

from api.errors import Forbidden, Unauthorized
from api.identity import psk_header
from core.settings import get_settings

HEADER = "x-rh-exports-psk"


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_psk(application: str, key: str | None) -> None:
    psks = get_settings().psks
    if not psks:
        raise Unauthorized("the internal API is closed: no pre-shared keys are configured (GEOEXPORT_PSKS)")
    if not key:
        raise Unauthorized(f"the {HEADER} header is required")
    if isinstance(psks, dict):
        if application in psks and _eq(psks[application], key):
            return
        if any(_eq(k, key) for k in psks.values()):
            raise Forbidden(f"this pre-shared key does not belong to application {application!r}")
        raise Unauthorized("invalid pre-shared key")
    if not any(_eq(k, key) for k in psks):
        raise Unauthorized("invalid pre-shared key")


def source_application(application: str = Path(), x_rh_exports_psk: str | None = Depends(psk_header)) -> str:
    check_psk(application, x_rh_exports_psk)
    return application
