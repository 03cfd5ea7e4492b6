"""The public export API's caller.

Users: the ``x-rh-identity`` header set by the gateway (missing → 401, undecodable or incomplete →
400). Services calling directly may add a pre-shared key (``x-rh-exports-psk``, configured in
``GEOEXPORT_SERVICE_PSKS``) to an identity of type ServiceAccount or System; the key decides which
organisations it may act for.
"""

from __future__ import annotations

import hmac

from fastapi import Depends
from fastapi.security import APIKeyHeader

from api.errors import BadRequest, Forbidden, Unauthorized
from core.resource_exports.identity import HEADER, Identity, IdentityError, decode_identity
from core.settings import get_settings

SERVICE_TYPES = ("ServiceAccount", "System")

# auto_error=False: our own {"message"} errors; the objects make /docs offer "Authorize" for them
identity_header = APIKeyHeader(name=HEADER, auto_error=False, scheme_name="identityHeader",
                               description="base64 JSON identity set by the platform gateway")
psk_header = APIKeyHeader(name="x-rh-exports-psk", auto_error=False, scheme_name="pskHeader",
                          description="pre-shared key: source applications (internal API), or services "
                                      "acting for an organisation (public API)")


def check_service_key(key: str, identity: Identity) -> None:
    services = get_settings().service_psks
    match = next((name for name, sk in services.items() if hmac.compare_digest(sk.key.encode(), key.encode())), None)
    if match is None:
        raise Unauthorized("invalid pre-shared key")
    if identity.type not in SERVICE_TYPES:
        raise Forbidden(f"a pre-shared key acts only for ServiceAccount or System identities, not {identity.type}")
    if identity.org_id not in services[match].org_ids:
        raise Forbidden(f"this pre-shared key may not act for organisation {identity.org_id}")


def current_identity(x_rh_identity: str | None = Depends(identity_header),
                     psk: str | None = Depends(psk_header)) -> Identity:
    if x_rh_identity is None or not x_rh_identity.strip():
        raise Unauthorized(f"the {HEADER} header is required")
    try:
        identity = decode_identity(x_rh_identity)
    except IdentityError as exc:
        raise BadRequest(str(exc)) from exc
    if psk is not None:
        check_service_key(psk, identity)
    return identity
