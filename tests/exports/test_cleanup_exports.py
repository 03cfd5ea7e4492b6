"""The cleanup flow on resource exports: expired ones lose rows and files; silent sources time out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.conftest import wait_until
from tests.exports.conftest import ALICE, export_body, wait_export

BASE = "/api/export/v1/exports"


def _upload(client, xenv, export, source_id: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    r = client.post(f"/app/export/v1/{export['id']}/demo/{source_id}/upload", content=body,
                    headers={"x-rh-exports-psk": "demo-key", "content-type": "application/json"})
    assert r.status_code == 202, r.text


def test_cleanup_times_out_silent_sources_and_removes_expired_exports(client, xenv, runner, monkeypatch
                                                                      ) -> None:  # type: ignore[no-untyped-def]
    from core.db import session_scope
    from core.models.exports import Export
    from core.resource_exports import files
    from core.settings import reset_settings
    from flows.cleanup import cleanup_expired

    body = export_body("json", [{"application": "demo", "resource": "users"},
                                {"application": "demo", "resource": "events"}])
    export = client.post(BASE, json=body, headers=ALICE).json()
    users, events = export["sources"]
    _upload(client, xenv, export, users["id"], b'[{"id": 1}]')

    # the events source never answers: past GEOEXPORT_SOURCE_TIMEOUT the cleanup flow fails it
    monkeypatch.setenv("GEOEXPORT_SOURCE_TIMEOUT", "1")
    reset_settings()
    with session_scope() as s:
        s.get(Export, uuid.UUID(export["id"])).created_at = datetime.now(UTC) - timedelta(seconds=30)
    dry = cleanup_expired(dry_run=True)
    assert "timed_out_sources" not in dry
    counts = cleanup_expired()
    assert counts["timed_out_sources"] == 1
    done = wait_export(client, export["id"])
    assert done["status"] == "partial"
    failed = [s for s in done["sources"] if s["status"] == "failed"]
    assert [s["id"] for s in failed] == [events["id"]] and failed[0]["message"] == "timed out"
    zip_path = files.package_file(export["id"])
    assert zip_path.exists()

    # expiry: rows and files go, and the API answers 404
    with session_scope() as s:
        s.get(Export, uuid.UUID(export["id"])).expires_at = datetime.now(UTC) - timedelta(minutes=1)
    zip_size = zip_path.stat().st_size
    counts = cleanup_expired()
    assert counts["expired_exports"] == 1 and counts["bytes_freed"] >= zip_size
    assert not zip_path.exists() and not files.upload_dir(export["id"]).exists()
    wait_until(lambda: client.get(f"{BASE}/{export['id']}/status", headers=ALICE).status_code == 404, 10)
    with session_scope() as s:
        assert s.get(Export, uuid.UUID(export["id"])) is None
    assert cleanup_expired()["expired_exports"] == 0  # idempotent
