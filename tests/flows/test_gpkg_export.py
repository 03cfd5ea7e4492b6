"""Map packages end to end: POST /create → real Prefect flow run (runner process) → GeoPackage →
callbacks → naive cache → download → delete, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import rasterio
from rio_tiler.io import Reader

from tests.conftest import CallbackServer, wait_until
from tiling.grid import TMS

RES14 = 180 / 256 / 2**14
BBOX = [34.790, 31.984, 34.800, 31.994]
FINAL = {"Completed", "Failed", "Aborted", "Expired"}


def register(client, source: Path) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/layers", json={"source": str(source), "productName": "e2e"})
    assert r.status_code == 201, r.text
    return r.json()["dbId"]


def wait_final(client, job_id: str, timeout: float = 180) -> dict:  # type: ignore[no-untyped-def]
    def done():  # type: ignore[no-untyped-def]
        body = client.get(f"/create/{job_id}").json()
        return body if body["status"] in FINAL else None

    return wait_until(done, timeout, 0.5, what=f"map job {job_id}")


def validate_gpkg(path: Path) -> None:
    """GDAL's own validator (gdal-utils' validate_gpkg.py, plain sqlite3 mode)."""
    out = subprocess.run([sys.executable, "-m", "osgeo_utils.samples.validate_gpkg", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_map_package_end_to_end(client, runner, demo_cog: Path, callback_server: CallbackServer,
                                 tmp_path: Path) -> None:
    db_id = register(client, demo_cog)
    good, flaky = callback_server.url("/cb"), callback_server.url("/flaky/fail-2")
    r = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14,
                                     "callbackURLs": [good, flaky], "priority": 5})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["status"] == "In-Progress" and created["taskIds"]
    job_id = created["id"]

    job = wait_final(client, job_id)
    assert job["status"] == "Completed", job
    assert job["percentage"] == 100.0
    assert job["zoom"] == 14 and job["tiles"]["done"] == job["tiles"]["planned"] > 0
    assert [t["id"] for t in job["tasks"]] == created["taskIds"]
    assert all(t["status"] == "Completed" for t in job["tasks"])
    assert job["flowRunId"] and job["fileUri"] == f"http://testserver/downloads/{job['packageName']}"

    # download (streamed, with Range support) and read the GeoPackage back
    d = client.get(f"/downloads/{job['packageName']}")
    assert d.status_code == 200 and len(d.content) == job["fileSize"]
    part = client.get(f"/downloads/{job['packageName']}", headers={"Range": "bytes=0-15"})
    assert part.status_code == 206 and part.content == b"SQLite format 3\x00"
    gpkg = tmp_path / job["packageName"]
    gpkg.write_bytes(d.content)
    side = client.get(f"/downloads/{job['packageName']}.sha256.json").json()
    assert side["sha256"] == hashlib.sha256(d.content).hexdigest() == job["sha256"]

    con = sqlite3.connect(gpkg)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    assert con.execute("PRAGMA user_version").fetchone()[0] >= 10201
    zooms = [z for (z,) in con.execute("SELECT zoom_level FROM gpkg_tile_matrix ORDER BY zoom_level")]
    assert zooms == list(range(15))
    q = "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles WHERE zoom_level=14"
    stored = con.execute(q).fetchall()
    assert stored
    con.close()
    validate_gpkg(gpkg)

    with rasterio.open(gpkg) as ds, Reader(str(demo_cog), tms=TMS) as src:
        minx, miny, maxx, maxy = ds.bounds
        snapped = job["snappedBbox"]
        assert abs(minx - snapped[0]) < 1e-9 and abs(maxy - snapped[3]) < 1e-9
        assert abs(ds.res[0] - RES14) < 1e-12
        # one stored tile against rio-tiler's rendering of the same tile
        _, col, row, _ = stored[0]
        img = src.tile(col, row, 14)
        b = TMS.xy_bounds(col, row, 14)
        win = rasterio.windows.from_bounds(b.left, b.bottom, b.right, b.top, ds.transform).round_offsets()
        ours = ds.read(indexes=[1, 2, 3], window=rasterio.windows.Window(win.col_off, win.row_off, 256, 256))
        valid = img.mask > 0
        diff = np.abs(ours.astype(int) - img.data.astype(int))[:, valid]
        assert diff.mean() < 3.0, diff.mean()

    # callbacks: the good URL once, the flaky one after two refusals; every attempt recorded
    wait_until(lambda: callback_server.payloads("/cb") and callback_server.payloads("/flaky/fail-2"), 30,
               what="callbacks")
    cb = callback_server.payloads("/cb")[0]
    assert cb["success"] is True and cb["status"] == "Completed" and cb["requestId"] == job_id
    assert cb["fileUri"] == job["fileUri"] and cb["fileSize"] == job["fileSize"] and cb["dbId"] == db_id
    assert callback_server.attempts["/flaky/fail-2"] == 3
    attempts = client.get(f"/create/{job_id}").json()["callbacks"]
    assert [(a["attempt"], a["success"]) for a in attempts if a["url"] == flaky] == [(1, False), (2, False), (3, True)]

    # sending the callbacks again (the gpkg-callbacks flow) does not tell anyone the same outcome twice
    from flows.callbacks import gpkg_callbacks

    assert gpkg_callbacks(job_id) == {}
    assert len(callback_server.payloads("/cb")) == 1 and callback_server.attempts["/flaky/fail-2"] == 3


def test_naive_cache(client, runner, demo_cog: Path, callback_server: CallbackServer) -> None:
    db_id = register(client, demo_cog)
    req = {"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 2, "callbackURLs": [callback_server.url("/a")]}
    first = client.post("/create", json=req).json()
    # identical request while the first is still running → the same job, callback URLs merged
    again = client.post("/create", json={**req, "callbackURLs": [callback_server.url("/b")]}).json()
    assert again["status"] == "In-Progress" and again["id"] == first["id"] and again["taskIds"] == first["taskIds"]
    job = wait_final(client, first["id"])
    assert job["status"] == "Completed"
    assert set(job["callbackURLs"]) == {callback_server.url("/a"), callback_server.url("/b")}
    wait_until(lambda: callback_server.payloads("/a") and callback_server.payloads("/b"), 30, what="callbacks")

    # identical after completion (a bbox that snaps to the same tiles counts as identical) → at once
    nudged = [BBOX[0] + 1e-7, BBOX[1], BBOX[2], BBOX[3] - 1e-7]
    hit = client.post("/create", json={**req, "bbox": nudged})
    assert hit.status_code == 200
    body = hit.json()
    assert body["status"] == "Completed" and body["requestId"] == first["id"] and body["success"] is True
    assert body["fileUri"] == job["fileUri"] and body["fileSize"] == job["fileSize"]
    assert body["expirationTime"] >= job["expirationTime"]

    # a different zoom or a different bbox is not a hit
    other_zoom = client.post("/create", json={**req, "targetResolution": RES14 * 4}).json()
    other_bbox = client.post("/create", json={**req, "bbox": [34.785, 31.980, 34.795, 31.990]}).json()
    assert other_zoom["status"] == "In-Progress" and other_zoom["id"] != first["id"]
    assert other_bbox["status"] == "In-Progress" and other_bbox["id"] not in (first["id"], other_zoom["id"])
    for jid in (other_zoom["id"], other_bbox["id"]):
        assert wait_final(client, jid)["status"] == "Completed"


def test_cancel_then_delete(client, runner, demo_cog: Path, callback_server: CallbackServer) -> None:
    db_id = register(client, demo_cog)
    req = {"dbId": db_id, "bbox": BBOX, "targetResolution": RES14, "callbackURLs": [callback_server.url("/c")],
           "priority": 1}
    job_id = client.post("/create", json=req).json()["id"]
    r = client.delete(f"/create/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "Aborted"
    job = client.get(f"/create/{job_id}").json()
    assert job["status"] == "Aborted" and job["fileUri"] is None
    wait_until(lambda: callback_server.payloads("/c"), 60, what="the abort callback")
    cb = callback_server.payloads("/c")[0]
    assert cb["success"] is False and cb["status"] == "Aborted" and cb["fileUri"] is None
    assert client.get(f"/downloads/{job['packageName']}").status_code == 404

    # a finished job is deleted with its files
    done_id = client.post("/create", json={**req, "callbackURLs": []}).json()["id"]
    done = wait_final(client, done_id)
    assert done["status"] == "Completed"
    from core.map_packages import package_path, sidecar_path

    assert package_path(done["packageName"]).exists()
    assert client.delete(f"/create/{done_id}").status_code == 200
    assert not package_path(done["packageName"]).exists() and not sidecar_path(done["packageName"]).exists()
    assert client.get(f"/create/{done_id}").status_code == 404
    assert client.get(f"/downloads/{done['packageName']}").status_code == 404


def test_failed_job_records_why_and_publishes_nothing(client, runner, demo_cog: Path, tmp_path: Path,
                                                      callback_server: CallbackServer) -> None:
    doomed = tmp_path / "doomed.tif"
    doomed.write_bytes(demo_cog.read_bytes())
    db_id = register(client, doomed)
    doomed.unlink()  # the layer's source disappears before the job runs
    r = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 8,
                                     "callbackURLs": [callback_server.url("/f")]})
    job = wait_final(client, r.json()["id"])
    assert job["status"] == "Failed" and job["errorReason"]
    assert "doomed.tif" in job["errorReason"]
    assert job["fileUri"] is None
    from core.map_packages import package_path

    assert not package_path(job["packageName"]).exists()
    assert not list(package_path(job["packageName"]).parent.glob(f".{job['packageName']}.*.partial"))
    wait_until(lambda: callback_server.payloads("/f"), 60, what="the failure callback")
    cb = callback_server.payloads("/f")[0]
    assert cb["success"] is False and cb["status"] == "Failed" and cb["errorReason"] == job["errorReason"]


def test_higher_priority_starts_first(prefect_api: str, demo_cog: Path, tmp_path_factory) -> None:
    """With one gpkg slot taken, the waiting job of higher priority starts before the older, lower one."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.db import session_scope
    from core.models import JobStatus, MapJob
    from tests.conftest import make_stack, start_runner, stop_process, token

    stack = make_stack("prio", "sqlite", tmp_path_factory.mktemp("prio"), {"GEOEXPORT_GPKG_CONCURRENCY": "1"})
    proc = start_runner(stack, prefect_api)
    try:
        with TestClient(create_app(), headers={"x-api-key": token()}) as client:
            db_id = register(client, demo_cog)
            # the one slot is held by a job that is "running" (a row only, no flow run)
            with session_scope() as s:
                layer_uuid = uuid.UUID(db_id)
                blocker = MapJob(layer_id=layer_uuid, cache_key="blocker", status=JobStatus.IN_PROGRESS, bbox=BBOX,
                                 snapped_bbox=BBOX, target_resolution=RES14, zoom=14, tile_format="mixed",
                                 package_name="blocker.gpkg")
                s.add(blocker)
                s.flush()
                blocker_id = blocker.id
            low = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 2,
                                               "callbackURLs": [], "priority": 1}).json()["id"]
            high = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 4,
                                                "callbackURLs": [], "priority": 100}).json()["id"]

            def both_waiting() -> bool:
                with session_scope() as s:
                    return all(s.get(MapJob, uuid.UUID(j)).queued_at is not None for j in (low, high))

            wait_until(both_waiting, 120, what="both jobs at the admission gate")
            with session_scope() as s:
                assert {s.get(MapJob, uuid.UUID(j)).status for j in (low, high)} == {JobStatus.PENDING}
                s.get(MapJob, blocker_id).status = JobStatus.COMPLETED
            lo, hi = wait_final(client, low), wait_final(client, high)
            assert lo["status"] == hi["status"] == "Completed"
            assert hi["startedAt"] < lo["startedAt"]
            assert hi["completedAt"] <= lo["startedAt"]  # limit 1: the low one waited for the high one
    finally:
        stop_process(proc)
        for fn in stack.cleanup:
            fn()


def test_cli_layers_and_one_off_gpkg(stack, demo_cog: Path, tmp_path: Path) -> None:
    env = {**stack.env}
    out = subprocess.run([sys.executable, "-m", "cli.main", "layers", "add", str(demo_cog), "--product-name", "cli"],
                         capture_output=True, text=True, env={**__import__("os").environ, **env})
    assert out.returncode == 0, out.stderr
    db_id = out.stdout.split("\t")[0]
    listed = subprocess.run([sys.executable, "-m", "cli.main", "layers", "list"], capture_output=True, text=True,
                            env={**__import__("os").environ, **env})
    assert db_id in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "cli.main", "layers", "add", str(tmp_path / "nope.tif")],
                         capture_output=True, text=True, env={**__import__("os").environ, **env})
    assert bad.returncode == 2 and "cannot read raster source" in bad.stderr

    target = tmp_path / "one-off.gpkg"
    run = subprocess.run([sys.executable, "-m", "cli.main", "gpkg", str(demo_cog), "--bbox", *map(str, BBOX),
                          "--resolution", str(RES14), "-o", str(target), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["zooms"] == list(range(15)) and result["tiles_written"] > 0
    validate_gpkg(target)


def test_one_off_gpkg_clips_to_a_footprint_file(demo_cog: Path, tmp_path: Path) -> None:
    """``geoexport gpkg --footprint``: the same clipping as a layer's footprint in the service."""
    with rasterio.open(demo_cog) as src:
        minx, miny, maxx, maxy = src.bounds
    cut = minx + (maxx - minx) / 3

    def gpkg(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "gpkg", str(demo_cog), "--bbox",
                               *map(str, (minx, miny, maxx, maxy)), "--resolution", str(RES14), "-o", str(out),
                               "--min-zoom", "13", "--quiet", *extra], capture_output=True, text=True)

    full = gpkg(tmp_path / "full.gpkg")
    assert full.returncode == 0, full.stderr
    west = {"type": "Polygon", "coordinates": [[[minx, miny], [cut, miny], [cut, maxy], [minx, maxy], [minx, miny]]]}
    (tmp_path / "west.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": west}))
    clipped = gpkg(tmp_path / "west.gpkg", "--footprint", str(tmp_path / "west.geojson"))
    assert clipped.returncode == 0, clipped.stderr
    n_full = json.loads(full.stdout.strip().splitlines()[-1])["tiles_written"]
    n_west = json.loads(clipped.stdout.strip().splitlines()[-1])["tiles_written"]
    assert 0 < n_west < n_full
    validate_gpkg(tmp_path / "west.gpkg")
    with rasterio.open(tmp_path / "west.gpkg") as ds:
        alpha = ds.read(ds.count) if ds.count == 4 else ds.dataset_mask()
        col = ds.index(cut + 0.0005, (miny + maxy) / 2)[1]
        assert not alpha[:, col:].any()  # east of the footprint: nothing visible
        assert alpha[:, : max(1, col - 40)].any()

    (tmp_path / "point.geojson").write_text(json.dumps({"type": "Point", "coordinates": [minx, miny]}))
    bad = gpkg(tmp_path / "bad.gpkg", "--footprint", str(tmp_path / "point.geojson"))
    assert bad.returncode == 2 and "must be a Polygon or MultiPolygon" in bad.stderr
    (tmp_path / "junk.geojson").write_text("{not json")
    junk = gpkg(tmp_path / "junk.gpkg", "--footprint", str(tmp_path / "junk.geojson"))
    assert junk.returncode == 2 and "not a GeoJSON polygon" in junk.stderr
    assert not (tmp_path / "bad.gpkg").exists() and not (tmp_path / "junk.gpkg").exists()


def test_jobs_belong_to_their_subject(client, runner, demo_cog: Path) -> None:
    """GET/DELETE /create/{id}: the subject or an admin; a job shared through the cache is readable, not deletable."""
    from tests.conftest import token

    alice = {"x-api-key": token("alice", ("export",))}
    bob = {"x-api-key": token("bob", ("export",))}
    carol = {"x-api-key": token("carol", ("export",))}
    db_id = register(client, demo_cog)
    req = {"dbId": db_id, "bbox": [34.786, 31.982, 34.796, 31.992], "targetResolution": RES14 * 8, "callbackURLs": []}
    job_id = client.post("/create", json=req, headers=alice).json()["id"]

    r = client.get(f"/create/{job_id}", headers=carol)
    assert r.status_code == 403 and r.json() == {"message": f"map job {job_id} belongs to another user"}
    assert client.delete(f"/create/{job_id}", headers=carol).status_code == 403
    assert client.get(f"/create/{job_id}", params={"token": token("alice", ("export",))}, headers={"x-api-key": ""}
                      ).status_code == 200

    # bob asks for the same package: the naive cache shares it (same layer data), so he may read it
    shared = client.post("/create", json=req, headers=bob).json()
    assert shared.get("id", shared.get("requestId")) == job_id
    assert wait_final(client, job_id)["status"] == "Completed"
    assert client.get(f"/create/{job_id}", headers=bob).status_code == 200
    pkg = client.get(f"/create/{job_id}", headers=alice).json()["packageName"]
    assert client.get(f"/downloads/{pkg}", headers=bob).status_code == 200
    # ... but only the owner (or an admin) may delete it
    r = client.delete(f"/create/{job_id}", headers=bob)
    assert r.status_code == 403 and r.json() == {"message": f"map job {job_id} belongs to another user"}
    assert client.delete(f"/create/{job_id}", headers=alice).status_code == 200
