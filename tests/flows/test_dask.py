"""Scale-out of one export: with GEOEXPORT_TASK_RUNNER=dask the tile batches run on a Dask
LocalCluster of several processes, and every tile is byte for byte the one the thread runner makes."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import make_stack, start_runner, stop_process, token
from tests.flows.test_gpkg_export import BBOX, RES14, register, wait_final


def _tiles(path) -> dict[tuple[int, int, int], bytes]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(path)
    try:
        return {(z, c, r): bytes(d) for z, c, r, d in
                con.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}
    finally:
        con.close()


def _run_job(stack, prefect_api: str, cog) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.map_packages import package_path

    proc = start_runner(stack, prefect_api)
    try:
        stack.apply()
        with TestClient(create_app(), headers={"x-api-key": token()}) as client:
            db_id = register(client, cog)
            job_id = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14,
                                                  "callbackURLs": []}).json()["id"]
            job = wait_final(client, job_id, 240)
            assert job["status"] == "Completed", (job.get("errorReason"), job)
            return job, _tiles(package_path(job["packageName"]))
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_dask_runner_gives_the_same_tiles(prefect_api: str, demo_cog, tmp_path_factory) -> None:
    pytest.importorskip("prefect_dask")
    threads = make_stack("threads", "sqlite", tmp_path_factory.mktemp("threads"))
    _, by_threads = _run_job(threads, prefect_api, demo_cog)
    dask = make_stack("dask", "sqlite", tmp_path_factory.mktemp("dask"),
                      {"GEOEXPORT_TASK_RUNNER": "dask", "GEOEXPORT_DASK_WORKERS": "2",
                       "PREFECT_LOGGING_LEVEL": "INFO"})
    job, by_dask = _run_job(dask, prefect_api, demo_cog)

    assert by_dask.keys() == by_threads.keys() and len(by_dask) == job["tiles"]["written"] > 0
    assert all(by_dask[k] == by_threads[k] for k in by_dask), "tiles differ between the dask and thread runners"
    runner_log = "\n".join(p.read_text(errors="replace") for p in dask.var_dir.glob("runner-*.log"))
    assert "LocalCluster" in runner_log, "the tile batches must have run on a Dask LocalCluster"
