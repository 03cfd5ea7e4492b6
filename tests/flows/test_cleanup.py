"""The cleanup-expired flow: expired packages leave the cache and the disk; orphans go; the rest stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import wait_until
from tests.flows.test_gpkg_export import BBOX, RES14, register, wait_final


def test_expired_package_is_removed_and_no_longer_cached(client, runner, stack, demo_cog: Path) -> None:
    from core import map_packages
    from core.db import session_scope
    from core.models import MapJob
    from flows.cleanup import cleanup_expired

    db_id = register(client, demo_cog)
    req = {"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 16, "callbackURLs": []}
    job = wait_final(client, client.post("/create", json=req).json()["id"])
    assert job["status"] == "Completed"
    pkg = map_packages.package_path(job["packageName"])
    assert pkg.exists()

    # an orphaned temporary file from a writer that died hours ago, and one being written right now
    stale = pkg.parent / ".dead.gpkg.1234abcd.partial"
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    fresh = pkg.parent / ".live.gpkg.5678abcd.partial"
    fresh.write_bytes(b"y" * 10)

    with session_scope() as s:
        s.get(MapJob, uuid.UUID(job["id"])).expires_at = datetime.now(UTC) - timedelta(minutes=1)

    # dry run: reports, deletes nothing
    dry = subprocess.run([sys.executable, "-m", "cli.main", "cleanup", "--dry-run"], capture_output=True, text=True,
                         env={**os.environ, **stack.env})
    assert dry.returncode == 0, dry.stderr
    assert f"would delete expired package {job['packageName']}" in dry.stdout
    assert json.loads(dry.stdout.strip().splitlines()[-1])["expired_packages"] == 1
    assert pkg.exists() and stale.exists()

    counts = cleanup_expired()
    assert counts["expired_packages"] == 1 and counts["orphan_temp_files"] == 1
    assert counts["bytes_freed"] >= job["fileSize"] + 1000
    assert not pkg.exists() and not map_packages.sidecar_path(job["packageName"]).exists()
    assert not stale.exists() and fresh.exists()
    assert client.get(f"/create/{job['id']}").json()["status"] == "Expired"
    assert client.get(f"/downloads/{job['packageName']}").status_code == 404

    # the cache no longer hits: the same request makes a new job
    again = client.post("/create", json=req).json()
    assert again["status"] == "In-Progress" and again["id"] != job["id"]
    wait_until(lambda: client.get(f"/create/{again['id']}").json()["status"] == "Completed", 120, 0.5)

    # idempotent: a second run finds nothing more
    assert cleanup_expired()["expired_packages"] == 0
    fresh.unlink()
