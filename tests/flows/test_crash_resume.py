"""Flow-run hygiene: a runner killed mid-export leaves a job that the cleanup flow marks as crashed;
retrying it resumes from the finished tile blocks and ends with a valid package."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import make_stack, start_runner, stop_process, token, wait_until
from tests.flows.test_gpkg_export import RES14, register, validate_gpkg, wait_final


@pytest.mark.slow
def test_killed_runner_then_retry_resumes(prefect_api: str, tmp_path_factory) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.map_packages import package_path
    from flows.cleanup import cleanup_expired
    from tiling.demo import write_demo_cog

    root = tmp_path_factory.mktemp("crash")
    cog = write_demo_cog(root / "big.tif", width=3072, height=3072)
    stack = make_stack("crash", "sqlite", root, {
        "GEOEXPORT_TILE_WORKERS": "1", "GEOEXPORT_BATCH_TILES": "4",
        "GEOEXPORT_HEARTBEAT_SECONDS": "1", "GEOEXPORT_STALL_TIMEOUT": "4",
    })
    runner = start_runner(stack, prefect_api)
    try:
        with TestClient(create_app(), headers={"x-api-key": token()}) as client:
            db_id = register(client, cog)
            layer = client.get(f"/layers/{db_id}").json()
            minx, miny, maxx, maxy = layer["bounds"]
            created = client.post("/create", json={"dbId": db_id, "bbox": [minx, miny, maxx, maxy],
                                                   "targetResolution": RES14, "callbackURLs": []}).json()
            job_id = created["id"]

            def some_done() -> list[str]:
                tasks = client.get(f"/create/{job_id}").json()["tasks"]
                return [t["id"] for t in tasks if t["status"] == "Completed"] if len(
                    [t for t in tasks if t["status"] == "Completed"]) >= 3 else []

            wait_until(some_done, 120, 0.05, what="a few finished tile blocks")
            os.killpg(runner.pid, signal.SIGKILL)  # the runner and the flow-run process under it die at once
            runner.wait()
            before = client.get(f"/create/{job_id}").json()
            assert before["status"] == "In-Progress"
            done_before = {t["id"] for t in before["tasks"] if t["status"] == "Completed"}
            assert 3 <= len(done_before) < len(before["tasks"])

            time.sleep(5)  # longer than GEOEXPORT_STALL_TIMEOUT: the heartbeat has gone quiet
            counts = cleanup_expired()
            assert counts["crashed_map_jobs"] == 1
            crashed = client.get(f"/create/{job_id}").json()
            assert crashed["status"] == "Failed" and crashed["errorReason"].startswith("crashed:")
            assert f"/create/{job_id}/retry" in crashed["errorReason"]
            assert client.get(f"/downloads/{crashed['packageName']}").status_code == 404

            runner = start_runner(stack, prefect_api)
            r = client.post(f"/create/{job_id}/retry")
            assert r.status_code == 200, r.text
            assert r.json()["id"] == job_id and r.json()["taskIds"] == created["taskIds"]
            assert client.post(f"/create/{job_id}/retry").status_code == 409  # not failed any more
            job = wait_final(client, job_id, 240)
            assert job["status"] == "Completed", job
            assert job["tiles"]["done"] == job["tiles"]["planned"]

        from core.db import session_scope
        from core.models import MapJob, MapJobTask

        with session_scope() as s:
            import uuid

            assert s.get(MapJob, uuid.UUID(job_id)).attempts == 2
            renders = {str(t.id): t.renders for t in s.query(MapJobTask).filter_by(job_id=uuid.UUID(job_id))}
        assert all(renders[t] == 1 for t in done_before), "finished blocks must not be rendered again"
        assert sum(renders.values()) < 2 * len(renders)

        path = package_path(job["packageName"])
        validate_gpkg(path)
        con = sqlite3.connect(path)
        assert con.execute("SELECT count(*) FROM tiles").fetchone()[0] == job["tiles"]["written"]
        con.close()
    finally:
        stop_process(runner)
        for fn in stack.cleanup:
            fn()


def test_retry_refuses_jobs_that_did_not_fail(client, runner, demo_cog: Path) -> None:
    from tests.flows.test_gpkg_export import BBOX

    db_id = register(client, demo_cog)
    job_id = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 32,
                                          "callbackURLs": []}).json()["id"]
    job = wait_final(client, job_id)
    r = client.post(f"/create/{job_id}/retry")
    assert r.status_code == 409
    assert r.json() == {"message": f"only a Failed job can be retried; map job {job_id} is {job['status']}"}
    other = {"x-api-key": token("mallory", ("export",))}
    assert client.post(f"/create/{job_id}/retry", headers=other).status_code == 403
