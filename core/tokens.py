"""JWTs of the map-package side: minting (operators, ``geoexport token``) and verifying (the API).

The key is ``GEOEXPORT_JWT_SECRET`` (HS256) or ``GEOEXPORT_JWT_PUBLIC_KEY`` (RS256/ES256, PEM). With
neither set, a secret is generated once under ``var/secrets/`` — the embedded default of ``make run``.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from core.settings import Settings, get_settings

ROLES = ("admin", "export", "read")


class TokenError(Exception):
    """Why a token was refused; the message never contains the token."""


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or any(r in self.roles for r in roles)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


ANONYMOUS_ADMIN = Principal("anonymous", frozenset({"admin"}))


def local_secret(settings: Settings | None = None, create: bool = True) -> str:
    settings = settings or get_settings()
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.secrets_dir / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    if not create:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the stack made it first
        time.sleep(0.1)
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _verification_key(settings: Settings) -> tuple[Any, list[str]]:
    if settings.jwt_public_key:
        return settings.jwt_public_key, ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
    return local_secret(settings), ["HS256"]


def verify(token: str, settings: Settings | None = None) -> Principal:
    settings = settings or get_settings()
    key, algorithms = _verification_key(settings)
    options = {"require": ["exp", "sub"], "verify_aud": bool(settings.jwt_audience)}
    try:
        claims = jwt.decode(
            token, key, algorithms=algorithms, options=options,
            audience=settings.jwt_audience or None, issuer=settings.jwt_issuer or None,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token signature is invalid") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("token audience is not accepted") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("token issuer is not accepted") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token has no {exc.claim} claim") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError("token algorithm is not accepted") from exc
    except jwt.DecodeError as exc:
        raise TokenError("token is malformed") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"token is invalid: {type(exc).__name__}") from exc
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = roles.replace(",", " ").split()
    if not isinstance(roles, list):
        raise TokenError("token roles claim must be a list of strings")
    return Principal(str(claims["sub"]), frozenset(str(r) for r in roles))


def mint(subject: str, roles: list[str], ttl_seconds: int, settings: Settings | None = None) -> str:
    """An HS256 token from the configured (or generated) secret."""
    settings = settings or get_settings()
    if settings.jwt_public_key and not settings.jwt_secret:
        raise TokenError("the service verifies RS/ES tokens; mint them with the matching private key")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "roles": roles, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, local_secret(settings), algorithm="HS256")


def parse_ttl(text: str) -> int:
    """'90', '90s', '15m', '1h', '7d' → seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            value = int(float(text[:-1]) * units[text[-1]])
        else:
            value = int(text)
    except ValueError as exc:
        raise ValueError(f"ttl {text!r} is not like 90s, 15m, 1h or 7d") from exc
    if value <= 0:
        raise ValueError("ttl must be positive")
    return value
