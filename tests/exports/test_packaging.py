"""End to end through the upload API: results → package-export flow run → zip download → delete."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

from tests.exports.conftest import ALICE, BOB, export_body, upload_url, wait_export

BASE = "/api/export/v1/exports"
DEMO = {"x-rh-exports-psk": "demo-key"}
INVENTORY = {"x-rh-exports-psk": "inventory-key"}


def test_partial_export_is_zipped_with_meta_and_readme(client, xenv, runner):  # type: ignore[no-untyped-def]
    from core.resource_exports import files

    body = export_body("json", [
        {"application": "demo", "resource": "users", "filters": {"limit": 2}},
        {"application": "demo", "resource": "users", "filters": {"limit": 1}},
        {"application": "inventory", "resource": "hosts"},
    ], name="quarterly")
    doc = client.post(BASE, json=body, headers=ALICE).json()
    eid, (u1, u2, hosts) = doc["id"], [s["id"] for s in doc["sources"]]
    rows1 = [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}]
    assert client.post(upload_url(eid, "demo", u1), content=json.dumps(rows1), headers=DEMO).status_code == 202
    # a streamed (chunked) body
    assert client.post(upload_url(eid, "demo", u2), content=iter([b'[{"id":', b" 3}]"]),
                       headers=DEMO).status_code == 202
    r = client.post(upload_url(eid, "inventory", hosts, "error"),
                    json={"message": "inventory database unavailable", "error": 503}, headers=INVENTORY)
    assert r.status_code == 202

    final = wait_export(client, eid)
    assert final["status"] == "partial" and final["completed_at"]
    failed = [s for s in final["sources"] if s["status"] == "failed"]
    assert [(s["message"], s["error"]) for s in failed] == [("inventory database unavailable", 503)]

    assert client.get(f"{BASE}/{eid}", headers=BOB).status_code == 404
    r = client.get(f"{BASE}/{eid}", headers=ALICE)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith("attachment")
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(zf.namelist()) == ["README.md", "demo-users-2.json", "demo-users.json", "meta.json"]
    assert json.loads(zf.read("demo-users.json")) == rows1
    assert json.loads(zf.read("demo-users-2.json")) == [{"id": 3}]
    meta = json.loads(zf.read("meta.json"))
    assert meta["exported_by"] == "alice" and meta["org_id"] == "org1" and meta["export_date"]
    assert meta["file_meta"] == [
        {"filename": "demo-users.json", "application": "demo", "resource": "users", "filters": {"limit": 2}},
        {"filename": "demo-users-2.json", "application": "demo", "resource": "users", "filters": {"limit": 1}},
    ]
    assert meta["failed_files"] == [{"application": "inventory", "resource": "hosts",
                                     "message": "inventory database unavailable", "error": 503}]
    readme = zf.read("README.md").decode()
    for words in ("quarterly", "alice", "demo-users-2.json", "inventory database unavailable", "hosts"):
        assert words in readme
    assert not list(files.package_file(eid).parent.glob(".*partial"))  # no temporary left behind

    assert client.delete(f"{BASE}/{eid}", headers=ALICE).status_code == 202
    assert client.get(f"{BASE}/{eid}", headers=ALICE).status_code == 404
    assert client.get(f"{BASE}/{eid}/status", headers=ALICE).status_code == 404
    assert not files.package_file(eid).exists() and not files.upload_dir(eid).exists()
    assert eid not in {e["id"] for e in client.get(BASE, headers=ALICE).json()["data"]}


def test_complete_csv_and_all_failed(client, xenv, runner):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from core.db import session_scope
    from core.models.exports import Export

    ok = client.post(BASE, json=export_body("csv", [{"application": "inventory", "resource": "packages"}]),
                     headers=ALICE).json()
    bad = client.post(BASE, json=export_body("csv", [{"application": "demo", "resource": "events"}]),
                      headers=ALICE).json()
    csv_body = b"name,version\nzlib,1.3\nopenssl,3.0\n"
    assert client.post(upload_url(ok["id"], "inventory", ok["sources"][0]["id"]), content=csv_body,
                       headers=INVENTORY).status_code == 202
    assert client.post(upload_url(bad["id"], "demo", bad["sources"][0]["id"], "error"),
                       json={"message": "no events"}, headers=DEMO).status_code == 202

    assert wait_export(client, ok["id"])["status"] == "complete"
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"{BASE}/{ok['id']}", headers=ALICE).content))
    assert zf.read("inventory-packages.csv") == csv_body
    assert json.loads(zf.read("meta.json"))["failed_files"] == []

    assert wait_export(client, bad["id"])["status"] == "failed"
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"{BASE}/{bad['id']}", headers=ALICE).content))
    assert sorted(zf.namelist()) == ["README.md", "meta.json"]
    assert "no events" in zf.read("README.md").decode()
    with session_scope() as s:  # packaging was launched once per export
        rows = s.scalars(select(Export).where(Export.id.in_([uuid.UUID(ok["id"]), uuid.UUID(bad["id"])]))).all()
        assert all(r.flow_run_id and r.package_requested_at for r in rows)
