"""The ``x-rh-identity`` header: base64 of ``{"identity": {"org_id", "type", "user": {"username"}}}``."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

HEADER = "x-rh-identity"


class IdentityError(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    org_id: str
    type: str
    username: str
    raw: str  # the header as received, forwarded to source applications unchanged


def _username(ident: dict[str, Any]) -> str | None:
    # Users carry user.username; service accounts service_account.username; systems a certificate cn.
    for section, key in (("user", "username"), ("service_account", "username"), ("system", "cn")):
        value = ident.get(section)
        if isinstance(value, dict) and isinstance(value.get(key), str) and value[key].strip():
            return value[key]
    return None


def decode_identity(header: str) -> Identity:
    try:
        decoded = base64.b64decode(header.strip(), validate=True)
        doc = json.loads(decoded)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{HEADER} is not base64-encoded JSON") from exc
    ident = doc.get("identity") if isinstance(doc, dict) else None
    if not isinstance(ident, dict):
        raise IdentityError(f"{HEADER} has no identity object")
    org_id = ident.get("org_id")
    if not isinstance(org_id, str) or not org_id.strip():
        raise IdentityError(f"{HEADER} has no identity.org_id")
    kind = ident.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise IdentityError(f"{HEADER} has no identity.type")
    username = _username(ident)
    if username is None:
        raise IdentityError(f"{HEADER} has no username (identity.user.username)")
    return Identity(org_id=org_id, type=kind, username=username, raw=header.strip())


def encode_identity(org_id: str, username: str, kind: str = "User") -> str:
    """An identity header as the platform gateway would send it (tests, examples, the SDK)."""
    doc = {"identity": {"org_id": org_id, "type": kind, "internal": {"org_id": org_id},
                        "user": {"username": username}}}
    return base64.b64encode(json.dumps(doc).encode()).decode()
