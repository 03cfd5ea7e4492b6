"""Workers mode: prefect.yaml deploys against a real Prefect server, two process workers share the
runs, map jobs go to the queue of their priority band, and the committed prefect.yaml is current."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, make_stack, stop_process, wait_until
from tests.flows.test_gpkg_export import BBOX, RES14, register, wait_final

ROOT = Path(__file__).resolve().parents[2]


def test_committed_prefect_yaml_is_generated_from_flows_deployments() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOEXPORT_")}
    out = subprocess.run([str(BIN / "geoexport"), "deployments", "render"], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "deployments" / "prefect.yaml").read_text(), (
        "deployments/prefect.yaml is stale: run `geoexport deployments render -o deployments/prefect.yaml`"
    )


@pytest.mark.slow
def test_deploy_and_two_workers_share_the_load(prefect_api: str, demo_cog: Path, tmp_path_factory) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import token

    root = tmp_path_factory.mktemp("workers")
    stack = make_stack("workers", "sqlite", root, {
        # the deployment names of prefect.yaml, as production uses them
        "GEOEXPORT_GPKG_DEPLOYMENT": "gpkg-export/gpkg-export",
        "GEOEXPORT_CALLBACKS_DEPLOYMENT": "gpkg-callbacks/gpkg-callbacks",
        "GEOEXPORT_PACKAGE_DEPLOYMENT": "package-export/package-export",
        "GEOEXPORT_CLEANUP_DEPLOYMENT": "cleanup-expired/cleanup-expired",
        "GEOEXPORT_USE_WORK_QUEUES": "true",
        "GEOEXPORT_GPKG_CONCURRENCY": "4",
    })
    env = {**os.environ, **stack.env, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "INFO",
           "PREFECT_WORKER_PREFETCH_SECONDS": "0"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pool = subprocess.run([str(BIN / "geoexport"), "deployments", "pool"], env=env, capture_output=True, text=True)
        assert pool.returncode == 0, pool.stderr
        deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file",
                                 "deployments/prefect.yaml"], env=env, cwd=ROOT, capture_output=True, text=True)
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

        dep = httpx.get(f"{prefect_api}/deployments/name/cleanup-expired/cleanup-expired").json()
        assert dep["work_pool_name"] == "geoexport" and dep["work_queue_name"] == "ops"
        assert dep["schedules"][0]["schedule"]["cron"] == "0 * * * *"
        assert dep["concurrency_limit"] == 1 or dep.get("global_concurrency_limit", {}).get("limit") == 1
        # the server's scheduler turns the cron into scheduled runs (this broke once on SQLAlchemy 2.1)
        def scheduled() -> list:
            runs = httpx.post(f"{prefect_api}/flow_runs/filter",
                              json={"deployments": {"id": {"any_": [dep["id"]]}}}).json()
            return [r for r in runs if r["state_type"] == "SCHEDULED"]

        upcoming = wait_until(scheduled, 60, 1, what="scheduled cleanup runs")
        assert all(r["expected_start_time"].endswith(("00:00Z", "00:00+00:00")) for r in upcoming)
        gpkg = httpx.get(f"{prefect_api}/deployments/name/gpkg-export/gpkg-export").json()
        assert gpkg["entrypoint"] == "flows.gpkg_export:gpkg_export"

        logs = []
        for n in (1, 2):
            log = open(root / f"worker{n}.log", "wb")  # noqa: SIM115
            logs.append(root / f"worker{n}.log")
            procs.append(subprocess.Popen([str(BIN / "geoexport"), "worker", "--limit", "1", "--name", f"w{n}"],
                                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

        stack.apply()
        with TestClient(create_app(), headers={"x-api-key": token()}) as client:
            db_id = register(client, demo_cog)
            ids = []
            for i, prio in enumerate([0, 5000, 5_000_000, 1]):
                req = {"dbId": db_id, "bbox": BBOX, "targetResolution": RES14 * 2 ** (i + 1), "callbackURLs": [],
                       "priority": prio}
                ids.append(client.post("/create", json=req).json()["id"])
            jobs = [wait_final(client, j, timeout=240) for j in ids]
            assert [j["status"] for j in jobs] == ["Completed"] * 4

        queues = [httpx.get(f"{prefect_api}/flow_runs/{j['flowRunId']}").json()["work_queue_name"] for j in jobs]
        assert queues == ["gpkg-low", "gpkg-normal", "gpkg-high", "gpkg-low"]

        def runs_of(log: Path) -> set[str]:
            return {m for j in jobs for m in [j["flowRunId"]] if m in log.read_text(errors="replace")}

        wait_until(lambda: len(runs_of(logs[0]) | runs_of(logs[1])) == 4, 30, what="worker logs")
        assert runs_of(logs[0]) and runs_of(logs[1]), "both workers must have run some of the flow runs"
        assert re.search(r"w1", logs[0].read_text()) and re.search(r"w2", logs[1].read_text())
    finally:
        for p in procs:
            stop_process(p)
        for fn in stack.cleanup:
            fn()


def test_worker_command_exists() -> None:
    out = subprocess.run([sys.executable, "-m", "cli.main", "worker", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--limit" in out.stdout
