"""The public API: identity, request validation, listing, isolation between identities."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from tests.exports.conftest import ALICE, BOB, export_body, identity, raw_identity

BASE = "/api/export/v1/exports"


def test_identity_header_is_required_and_must_decode(client, xenv):  # type: ignore[no-untyped-def]
    r = client.get(BASE)
    assert r.status_code == 401 and "x-rh-identity" in r.json()["message"]
    r = client.post(BASE, json=export_body())
    assert r.status_code == 401
    bad = [
        {"x-rh-identity": "not base64 at all!"},
        {"x-rh-identity": base64.b64encode(b"not json").decode()},
        raw_identity(["identity"]),
        raw_identity({"identity": {"type": "User", "user": {"username": "a"}}}),  # no org_id
        raw_identity({"identity": {"org_id": "1", "user": {"username": "a"}}}),  # no type
        raw_identity({"identity": {"org_id": "1", "type": "User", "user": {}}}),  # no username
    ]
    for headers in bad:
        r = client.get(BASE, headers=headers)
        assert r.status_code == 400, (headers, r.text)
        assert "x-rh-identity" in r.json()["message"]
    for path in (f"{BASE}/00000000-0000-0000-0000-000000000000", f"{BASE}/x/status"):
        assert client.get(path).status_code == 401
    assert client.delete(f"{BASE}/00000000-0000-0000-0000-000000000000").status_code == 401


def test_create_answers_202_with_the_export(client, xenv):  # type: ignore[no-untyped-def]
    body = export_body("csv", [
        {"application": "demo", "resource": "users", "filters": {"limit": 3}},
        {"application": "inventory", "resource": "hosts"},
    ])
    r = client.post(BASE, json=body, headers=ALICE)
    assert r.status_code == 202, r.text
    doc = r.json()
    assert set(doc) == {"id", "name", "created_at", "expires_at", "format", "status", "sources"}
    assert doc["status"] == "pending" and doc["format"] == "csv" and doc["name"] == "my export"
    created = datetime.fromisoformat(doc["created_at"])
    expires = datetime.fromisoformat(doc["expires_at"])
    assert abs((expires - created) - timedelta(days=7)) < timedelta(seconds=5)
    assert [(s["application"], s["resource"], s["filters"], s["status"]) for s in doc["sources"]] == [
        ("demo", "users", {"limit": 3}, "pending"), ("inventory", "hosts", {}, "pending")]
    assert all(s["id"] for s in doc["sources"])


def test_expiry_is_the_earliest_asked_for(client, xenv):  # type: ignore[no-untyped-def]
    soon = datetime.now(UTC) + timedelta(days=2)
    later = datetime.now(UTC) + timedelta(days=3)
    body = export_body(expires_at=later.isoformat(),
                       sources=[{"application": "demo", "resource": "users", "expires": soon.isoformat()}])
    r = client.post(BASE, json=body, headers=ALICE)
    assert r.status_code == 202, r.text
    assert abs(datetime.fromisoformat(r.json()["expires_at"]) - soon) < timedelta(seconds=1)


@pytest.mark.parametrize(("body", "status", "words"), [
    (export_body("pdf"), 400, "format pdf is not supported yet"),
    (export_body("xml"), 400, "format"),
    (export_body(sources=[]), 400, "sources"),
    ({"name": "x", "format": "json"}, 400, "sources"),
    (export_body(sources=[{"application": "demo", "resource": "users", "filters": [1, 2]}]), 400,
     "sources[0].filters"),
    (export_body(sources=[{"application": "demo", "resource": "users", "filters": "a=b"}]), 400, "filters"),
    (export_body(expires_at="2001-01-01T00:00:00Z"), 400, "expires_at"),
    (export_body(sources=[{"application": "demo", "resource": "users", "expires": "2001-01-01T00:00:00Z"}]), 400,
     "sources[0].expires"),
    (export_body(sources=[{"application": "nope", "resource": "users"}]), 400, "sources[0].application"),
    (export_body(sources=[{"application": "demo", "resource": "hosts"}]), 400, "sources[0].resource"),
    (export_body(sources=[{"application": "demo"}]), 400, "resource"),
    ({"format": "json", "sources": [{"application": "demo", "resource": "users"}]}, 400, "name"),
    (export_body(name=""), 400, "name"),
    ([1, 2], 400, ""),
])
def test_bad_requests_are_400_naming_the_field(client, xenv, body, status, words):  # type: ignore[no-untyped-def]
    r = client.post(BASE, json=body, headers=ALICE)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    if words == "format pdf is not supported yet":
        assert r.json()["message"] == words


def test_invalid_json_body_is_400(client, xenv):  # type: ignore[no-untyped-def]
    r = client.post(BASE, content=b"{not json", headers={**ALICE, "content-type": "application/json"})
    assert r.status_code == 400 and "message" in r.json()


def test_isolation_between_identities(client, xenv):  # type: ignore[no-untyped-def]
    mine = client.post(BASE, json=export_body(), headers=ALICE).json()["id"]
    theirs = client.post(BASE, json=export_body(), headers=BOB).json()["id"]
    other_org = identity("org2", "alice")
    for headers, own, foreign in ((ALICE, mine, theirs), (BOB, theirs, mine)):
        assert client.get(f"{BASE}/{own}/status", headers=headers).status_code == 200
        assert client.get(f"{BASE}/{foreign}/status", headers=headers).status_code == 404
        assert client.get(f"{BASE}/{foreign}", headers=headers).status_code == 404
        assert client.delete(f"{BASE}/{foreign}", headers=headers).status_code == 404
        ids = {e["id"] for e in client.get(BASE, headers=headers).json()["data"]}
        assert own in ids and foreign not in ids
    # same username in another organization is someone else
    assert client.get(f"{BASE}/{mine}/status", headers=other_org).status_code == 404
    assert client.get(BASE, headers=other_org).json()["meta"]["count"] == 0
    # both survived the other's attempts
    assert client.get(f"{BASE}/{theirs}/status", headers=BOB).status_code == 200
    assert client.get(f"{BASE}/not-a-uuid/status", headers=ALICE).status_code == 404


def test_download_before_ready_is_409_and_delete_removes(client, xenv):  # type: ignore[no-untyped-def]
    eid = client.post(BASE, json=export_body(), headers=ALICE).json()["id"]
    r = client.get(f"{BASE}/{eid}", headers=ALICE)
    assert r.status_code == 409 and "not ready" in r.json()["message"]
    assert client.delete(f"{BASE}/{eid}", headers=ALICE).status_code == 202
    for path in (f"{BASE}/{eid}", f"{BASE}/{eid}/status"):
        assert client.get(path, headers=ALICE).status_code == 404
    assert client.delete(f"{BASE}/{eid}", headers=ALICE).status_code == 404


def test_list_filters_sorting_and_paging(client, xenv):  # type: ignore[no-untyped-def]
    user = identity("org-list", "lister")
    ids = {}
    for name, app, res, fmt in (("b-users", "demo", "users", "json"), ("a-hosts", "inventory", "hosts", "csv"),
                                ("c-events", "demo", "events", "json")):
        body = export_body(fmt, [{"application": app, "resource": res}], name=name)
        ids[name] = client.post(BASE, json=body, headers=user).json()["id"]

    def names(query: str = "") -> list[str]:
        r = client.get(f"{BASE}{query}", headers=user)
        assert r.status_code == 200, r.text
        return [e["name"] for e in r.json()["data"]]

    assert names() == ["b-users", "a-hosts", "c-events"]  # created_at asc by default
    assert names("?sort=name") == ["a-hosts", "b-users", "c-events"]
    assert names("?sort=name&dir=desc") == ["c-events", "b-users", "a-hosts"]
    assert names("?sort=expires_at&dir=desc")[0] == "c-events"
    assert names("?name=a-hosts") == ["a-hosts"]
    assert names("?application=demo&sort=name") == ["b-users", "c-events"]
    assert names("?resource=hosts") == ["a-hosts"]
    assert names("?status=pending&sort=name") == ["a-hosts", "b-users", "c-events"]
    assert names("?status=complete") == []
    today = datetime.now(UTC).date().isoformat()
    assert len(names(f"?created_at={today}")) == 3
    assert names("?created_at=2001-01-01") == []
    assert len(names(f"?created_at_from={today}&created_at_to={today}")) == 3
    assert names("?expires_at_to=2001-01-01") == []
    week = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
    assert len(names(f"?expires_at_from={today}&expires_at_to={week}")) == 3

    r = client.get(f"{BASE}?sort=name&limit=2", headers=user).json()
    assert r["meta"]["count"] == 3 and [e["name"] for e in r["data"]] == ["a-hosts", "b-users"]
    links = r["links"]
    assert links["previous"] is None and "offset=0" in links["first"] and "offset=2" in links["last"]
    assert "sort=name" in links["next"] and "limit=2" in links["next"]
    page2 = client.get(links["next"], headers=user).json()
    assert [e["name"] for e in page2["data"]] == ["c-events"] and page2["links"]["next"] is None
    assert page2["links"]["previous"] is not None
    item = page2["data"][0]
    assert {"id", "name", "created_at", "expires_at", "format", "status"} <= set(item)

    for query, field in (("?limit=0", "limit"), ("?limit=1001", "limit"), ("?offset=-1", "offset"),
                         ("?sort=size", "sort"), ("?dir=up", "dir"), ("?status=done", "status"),
                         ("?created_at=yesterday", "created_at"), ("?expires_at_from=31-12-2020", "expires_at_from")):
        r = client.get(f"{BASE}{query}", headers=user)
        assert r.status_code == 400, (query, r.text)
        assert field in r.json()["message"]
    assert client.get(f"{BASE}?limit=1000", headers=user).status_code == 200


def test_request_messages_are_in_the_outbox_with_the_export(client, xenv):  # type: ignore[no-untyped-def]
    import json
    import uuid

    from sqlalchemy import select

    from core.db import session_scope
    from core.models.exports import OutboxMessage

    doc = client.post(BASE, json=export_body(sources=[{"application": "demo", "resource": "users"},
                                                      {"application": "demo", "resource": "events"}]),
                      headers=ALICE).json()
    with session_scope() as s:
        rows = list(s.scalars(select(OutboxMessage).where(OutboxMessage.export_id == uuid.UUID(doc["id"]))
                              .order_by(OutboxMessage.id)))
    assert [json.loads(r.value)["data"]["resource_request"]["uuid"] for r in rows] == [
        x["id"] for x in doc["sources"]]
    assert all(r.topic == xenv["GEOEXPORT_KAFKA_REQUESTS_TOPIC"] for r in rows)


def test_expired_exports_are_gone(client, xenv):  # type: ignore[no-untyped-def]
    import uuid

    from sqlalchemy import update

    from core.db import session_scope
    from core.models.exports import Export

    eid = client.post(BASE, json=export_body(), headers=ALICE).json()["id"]
    with session_scope() as s:
        s.execute(update(Export).where(Export.id == uuid.UUID(eid))
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get(f"{BASE}/{eid}/status", headers=ALICE).status_code == 404
    assert client.get(f"{BASE}/{eid}", headers=ALICE).status_code == 404
    assert eid not in {e["id"] for e in client.get(BASE, headers=ALICE).json()["data"]}


def test_service_accounts_are_identities_too(client, xenv):  # type: ignore[no-untyped-def]
    sa = raw_identity({"identity": {"org_id": "org1", "type": "ServiceAccount",
                                    "service_account": {"username": "service-account-42"}}})
    eid = client.post(BASE, json=export_body(), headers=sa).json()["id"]
    assert client.get(f"{BASE}/{eid}/status", headers=sa).status_code == 200
    assert client.get(f"{BASE}/{eid}/status", headers=ALICE).status_code == 404
