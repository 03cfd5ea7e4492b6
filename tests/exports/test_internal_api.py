"""The source applications' API: pre-shared keys, target checks, limits, malformed results."""

from __future__ import annotations

import json

import pytest

from tests.exports.conftest import ALICE, export_body, upload_url

BASE = "/api/export/v1/exports"
DEMO = {"x-rh-exports-psk": "demo-key"}


def _export(client, fmt: str = "json", n: int = 2) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    srcs = [{"application": "demo", "resource": "users"}, {"application": "inventory", "resource": "hosts"}][:n]
    doc = client.post(BASE, json=export_body(fmt, srcs), headers=ALICE).json()
    return doc["id"], [s["id"] for s in doc["sources"]]


def _source(client, eid: str, sid: str) -> dict:  # type: ignore[no-untyped-def]
    doc = client.get(f"{BASE}/{eid}/status", headers=ALICE).json()
    return next(s for s in doc["sources"] if s["id"] == sid)


def test_keys_are_required_and_bound_to_their_application(client, xenv):  # type: ignore[no-untyped-def]
    eid, (users, hosts) = _export(client)
    url = upload_url(eid, "demo", users)
    assert client.post(url, content=b"[]").status_code == 401
    r = client.post(url, content=b"[]", headers={"x-rh-exports-psk": "wrong"})
    assert r.status_code == 401 and r.json()["message"]
    r = client.post(url, content=b"[]", headers={"x-rh-exports-psk": "inventory-key"})
    assert r.status_code == 403 and "demo" in r.json()["message"]
    r = client.post(upload_url(eid, "demo", users, "error"), json={"message": "x"},
                    headers={"x-rh-exports-psk": "inventory-key"})
    assert r.status_code == 403
    assert _source(client, eid, users)["status"] == "pending"


def test_no_keys_configured_refuses_everything(client, xenv, monkeypatch):  # type: ignore[no-untyped-def]
    from core.settings import reset_settings

    eid, (users, _hosts) = _export(client)
    monkeypatch.setenv("GEOEXPORT_PSKS", "")
    reset_settings()
    for headers in ({}, DEMO, {"x-rh-exports-psk": ""}):
        r = client.post(upload_url(eid, "demo", users), content=b"[]", headers=headers)
        assert r.status_code == 401, r.text
        assert "no pre-shared keys" in r.json()["message"] or "required" in r.json()["message"]


def test_key_list_accepts_any_listed_key(client, xenv, monkeypatch):  # type: ignore[no-untyped-def]
    from core.settings import reset_settings

    eid, (users, _hosts) = _export(client)
    monkeypatch.setenv("GEOEXPORT_PSKS", "k1,k2")
    reset_settings()
    assert client.post(upload_url(eid, "demo", users), content=b"[]",
                       headers={"x-rh-exports-psk": "k3"}).status_code == 401
    assert client.post(upload_url(eid, "demo", users), content=b"[]",
                       headers={"x-rh-exports-psk": "k2"}).status_code == 202


def test_unknown_targets_wrong_application_and_finished_sources(client, xenv, runner):  # type: ignore[no-untyped-def]
    eid, (users, hosts) = _export(client)
    zero = "00000000-0000-0000-0000-000000000000"
    assert client.post(upload_url(zero, "demo", users), content=b"[]", headers=DEMO).status_code == 404
    assert client.post(upload_url(eid, "demo", zero), content=b"[]", headers=DEMO).status_code == 404
    assert client.post(upload_url("nope", "demo", users), content=b"[]", headers=DEMO).status_code == 404
    r = client.post(upload_url(eid, "demo", hosts), content=b"[]", headers=DEMO)  # hosts belongs to inventory
    assert r.status_code == 400 and "inventory" in r.json()["message"]
    r = client.post(upload_url(eid, "demo", users), content=b'[{"id": 1}]', headers=DEMO)
    assert r.status_code == 202, r.text
    assert _source(client, eid, users)["status"] == "complete"
    assert client.get(f"{BASE}/{eid}/status", headers=ALICE).json()["status"] == "running"
    r = client.post(upload_url(eid, "demo", users), content=b"[]", headers=DEMO)
    assert r.status_code == 410 and r.json()["message"]
    assert client.post(upload_url(eid, "demo", users, "error"), json={"message": "late"},
                       headers=DEMO).status_code == 410
    # the error route: {message, error}
    inv = {"x-rh-exports-psk": "inventory-key"}
    assert client.post(upload_url(eid, "inventory", hosts, "error"), json={"error": 1}, headers=inv).status_code == 400
    r = client.post(upload_url(eid, "inventory", hosts, "error"), json={"message": "db down", "error": 503},
                    headers=inv)
    assert r.status_code == 202
    src = _source(client, eid, hosts)
    assert (src["status"], src["message"], src["error"]) == ("failed", "db down", 503)


def test_upload_over_the_limit_is_413_and_fails_the_source(client, xenv, monkeypatch, runner):  # type: ignore[no-untyped-def]
    from core.settings import reset_settings

    monkeypatch.setenv("GEOEXPORT_MAX_UPLOAD_BYTES", "1000")
    reset_settings()
    eid, (users, hosts) = _export(client)
    r = client.post(upload_url(eid, "demo", users), content=b"[" + b"1," * 600 + b"1]", headers=DEMO)
    assert r.status_code == 413 and "1000" in r.json()["message"]
    src = _source(client, eid, users)
    assert src["status"] == "failed" and "larger" in src["message"]

    def chunks():  # no content-length: the limit is enforced while streaming
        for _ in range(20):
            yield b"[" + b" " * 100 + b"]"

    r = client.post(upload_url(eid, "inventory", hosts), content=chunks(),
                    headers={"x-rh-exports-psk": "inventory-key"})
    assert r.status_code == 413
    assert _source(client, eid, hosts)["status"] == "failed"


@pytest.mark.parametrize(("fmt", "body", "words"), [
    ("json", b'[{"id": 1}, {"id": ', "JSON does not parse"),
    ("json", b"", "empty"),
    ("csv", b"", "empty"),
    ("csv", b"\n1,2\n3,4\n", "no header row"),
])
def test_malformed_results_fail_the_source(client, xenv, fmt, body, words):  # type: ignore[no-untyped-def]
    eid, (users, _hosts) = _export(client, fmt)
    r = client.post(upload_url(eid, "demo", users), content=body, headers=DEMO)
    assert r.status_code == 400 and words in r.json()["message"]
    src = _source(client, eid, users)
    assert src["status"] == "failed" and words in src["message"] and src["error"] == "malformed"


def test_error_route_value_is_kept(client, xenv):  # type: ignore[no-untyped-def]
    eid, (users, _hosts) = _export(client)
    r = client.post(upload_url(eid, "demo", users, "error"), content=json.dumps({"message": "m", "error": "E42"}),
                    headers={**DEMO, "content-type": "application/json"})
    assert r.status_code == 202
    assert _source(client, eid, users)["error"] == "E42"
