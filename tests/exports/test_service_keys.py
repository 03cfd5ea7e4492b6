"""Service-to-service calls of the public API: a pre-shared key plus a ServiceAccount/System identity,
limited to the organisations the key names. Also: the OpenAPI document offers every scheme."""

from __future__ import annotations

import json

import pytest

from tests.exports.conftest import export_body, identity

BASE = "/api/export/v1/exports"
KEY = "billing-service-key-0123456789"


@pytest.fixture
def service_keys(xenv, monkeypatch):  # type: ignore[no-untyped-def]
    from core.settings import reset_settings

    monkeypatch.setenv("GEOEXPORT_SERVICE_PSKS", json.dumps({"billing": {"key": KEY, "org_ids": ["org7"]}}))
    reset_settings()
    yield
    monkeypatch.delenv("GEOEXPORT_SERVICE_PSKS")
    reset_settings()


def test_service_key_acts_for_its_organisations(client, service_keys) -> None:  # type: ignore[no-untyped-def]
    svc = {**identity("org7", "billing-bot", kind="ServiceAccount", service_account={"username": "billing-bot"}),
           "x-rh-exports-psk": KEY}
    r = client.post(BASE, json=export_body(), headers=svc)
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    assert client.get(f"{BASE}/{export_id}/status", headers=svc).status_code == 200
    system = {**identity("org7", "host-1", kind="System", system={"cn": "host-1"}), "x-rh-exports-psk": KEY}
    assert client.get(BASE, headers=system).status_code == 200


@pytest.mark.parametrize(("headers", "status", "message"), [
    ({**identity("org7", "bot", kind="ServiceAccount"), "x-rh-exports-psk": "wrong-key-0123456789"}, 401,
     "invalid pre-shared key"),
    ({**identity("org8", "bot", kind="ServiceAccount"), "x-rh-exports-psk": KEY}, 403,
     "this pre-shared key may not act for organisation org8"),
    ({**identity("org7", "alice", kind="User"), "x-rh-exports-psk": KEY}, 403,
     "a pre-shared key acts only for ServiceAccount or System identities, not User"),
])
def test_service_key_refusals(client, service_keys, headers, status, message) -> None:  # type: ignore[no-untyped-def]
    r = client.get(BASE, headers=headers)
    assert r.status_code == status
    assert r.json() == {"message": message}


def test_openapi_lists_every_security_scheme(client) -> None:  # type: ignore[no-untyped-def]
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {s["name"]: s["in"] for s in schemes.values()} == {
        "x-api-key": "header", "token": "query", "x-rh-identity": "header", "x-rh-exports-psk": "header",
    }
