"""Tokens on the map-package side: every refusal with its exact status and message, header and query form."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.conftest import token


@pytest.fixture
def anon(stack):  # type: ignore[no-untyped-def]
    from api.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def raw(claims: dict, key: str | None = None, alg: str = "HS256") -> str:
    return jwt.encode(claims, key or os.environ["GEOEXPORT_JWT_SECRET"], algorithm=alg)


def now() -> int:
    return int(time.time())


NO_JOB = "/create/00000000-0000-0000-0000-000000000000"
ROUTES = [("GET", "/layers"), ("GET", "/storage"), ("POST", "/create"), ("GET", NO_JOB), ("DELETE", NO_JOB),
          ("GET", "/downloads/x.gpkg"), ("POST", "/layers"), ("DELETE", "/layers/x")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_token_is_403(anon, method: str, path: str) -> None:
    r = anon.request(method, path, json={})
    assert r.status_code == 403
    assert r.json() == {"message": "missing token: send a JWT in the x-api-key header or the token query parameter"}


CASES = [
    ("malformed", lambda: "not.a.jwt", "token is malformed"),
    ("garbage", lambda: "abc", "token is malformed"),
    ("bad signature", lambda: raw({"sub": "u", "roles": ["admin"], "exp": now() + 60}, key="other-" + "x" * 32),
     "token signature is invalid"),
    ("expired", lambda: raw({"sub": "u", "roles": ["admin"], "exp": now() - 10}), "token expired"),
    ("no exp", lambda: raw({"sub": "u", "roles": ["admin"]}), "token has no exp claim"),
    ("no sub", lambda: raw({"roles": ["admin"], "exp": now() + 60}), "token has no sub claim"),
    ("alg none", lambda: jwt.encode({"sub": "u", "roles": ["admin"], "exp": now() + 60}, None, algorithm="none"),
     "token algorithm is not accepted"),
]


@pytest.mark.parametrize("form", ["header", "query"])
@pytest.mark.parametrize(("case", "make", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_tokens_are_403_saying_why(anon, form: str, case: str, make, message: str) -> None:  # type: ignore[no-untyped-def]
    tok = make()
    if form == "header":
        r = anon.get("/layers", headers={"x-api-key": tok})
    else:
        r = anon.get("/layers", params={"token": tok})
    assert r.status_code == 403, case
    assert r.json() == {"message": message}
    assert tok not in r.text


@pytest.mark.parametrize("form", ["header", "query"])
def test_good_token_both_forms(anon, form: str) -> None:
    tok = token("reader", ("read",))
    r = anon.get("/layers", **({"headers": {"x-api-key": tok}} if form == "header" else {"params": {"token": tok}}))
    assert r.status_code == 200


def test_audience_and_issuer(anon, monkeypatch) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv("GEOEXPORT_JWT_AUDIENCE", "geoexport")
    monkeypatch.setenv("GEOEXPORT_JWT_ISSUER", "https://idp.example")
    reset_settings()
    try:
        base = {"sub": "u", "roles": ["admin"], "exp": now() + 60}
        ok = raw({**base, "aud": "geoexport", "iss": "https://idp.example"})
        assert anon.get("/layers", headers={"x-api-key": ok}).status_code == 200
        wrong_aud = raw({**base, "aud": "someone-else", "iss": "https://idp.example"})
        r = anon.get("/layers", params={"token": wrong_aud})
        assert r.status_code == 403 and r.json() == {"message": "token audience is not accepted"}
        wrong_iss = raw({**base, "aud": "geoexport", "iss": "https://evil.example"})
        r = anon.get("/layers", headers={"x-api-key": wrong_iss})
        assert r.status_code == 403 and r.json() == {"message": "token issuer is not accepted"}
    finally:
        monkeypatch.delenv("GEOEXPORT_JWT_AUDIENCE")
        monkeypatch.delenv("GEOEXPORT_JWT_ISSUER")
        reset_settings()


def test_rs256_public_key(anon, monkeypatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from core.settings import reset_settings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("GEOEXPORT_JWT_PUBLIC_KEY", pem.decode())
    reset_settings()
    try:
        good = jwt.encode({"sub": "svc", "roles": ["admin"], "exp": now() + 60}, key, algorithm="RS256")
        assert anon.get("/layers", headers={"x-api-key": good}).status_code == 200
        # an HS256 token signed with the public key text must not pass (algorithm confusion)
        forged = raw({"sub": "svc", "roles": ["admin"], "exp": now() + 60}, key="x" * 40)
        r = anon.get("/layers", headers={"x-api-key": forged})
        assert r.status_code == 403 and r.json() == {"message": "token algorithm is not accepted"}
    finally:
        monkeypatch.delenv("GEOEXPORT_JWT_PUBLIC_KEY")
        reset_settings()


def test_roles(anon, demo_cog: Path) -> None:
    exporter = {"x-api-key": token("alice", ("export",))}
    reader = {"x-api-key": token("rob", ("read",))}
    r = anon.post("/layers", json={"source": str(demo_cog)}, headers=exporter)
    assert r.status_code == 403 and r.json() == {"message": "token of 'alice' lacks the 'admin' role"}
    r = anon.post("/create", json={}, headers=reader)
    assert r.status_code == 403 and r.json() == {"message": "token of 'rob' lacks the 'export' or 'admin' role"}
    r = anon.get("/downloads/x.gpkg", params={"token": token("rob", ("read",))})
    assert r.status_code == 403 and r.json() == {"message": "token of 'rob' lacks the 'export' or 'admin' role"}
    r = anon.delete("/layers/00000000-0000-0000-0000-000000000000", headers=exporter)
    assert r.status_code == 403


def test_health_is_open(anon) -> None:
    assert anon.get("/health").status_code == 200


def test_token_command_mints_a_working_token(anon, stack) -> None:
    cmd = [sys.executable, "-m", "cli.main", "token", "--sub", "ops", "--roles", "export", "--ttl", "1h"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **stack.env})
    assert out.returncode == 0, out.stderr
    tok = out.stdout.strip()
    claims = jwt.decode(tok, os.environ["GEOEXPORT_JWT_SECRET"], algorithms=["HS256"])
    assert claims["sub"] == "ops" and claims["roles"] == ["export"] and 3500 < claims["exp"] - now() <= 3600
    assert anon.get("/storage", headers={"x-api-key": tok}).status_code == 200
    bad = subprocess.run([sys.executable, "-m", "cli.main", "token", "--sub", "x", "--roles", "root"],
                         capture_output=True, text=True, env={**os.environ, **stack.env})
    assert bad.returncode != 0


def test_auth_off_is_explicit_and_loud(stack, monkeypatch, caplog) -> None:
    from api.app import create_app
    from core.settings import reset_settings

    monkeypatch.setenv("GEOEXPORT_AUTH", "off")
    reset_settings()
    try:
        with caplog.at_level("WARNING"):
            app = create_app()
        assert "GEOEXPORT_AUTH=off" in caplog.text
        with TestClient(app) as c:
            assert c.get("/layers").status_code == 200
    finally:
        monkeypatch.setenv("GEOEXPORT_AUTH", "on")
        reset_settings()


def test_openapi_offers_the_security_schemes(anon) -> None:
    schemes = anon.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "x-api-key",
                                       "description": "JWT (map-package side)"}
    assert schemes["tokenQuery"]["in"] == "query" and schemes["tokenQuery"]["name"] == "token"
