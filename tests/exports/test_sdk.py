"""The source-application SDK and the demo source: real processes, real HTTP, real broker, real flow runs."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import httpx

from tests.conftest import BIN, free_port, stop_process, wait_until
from tests.exports.conftest import ALICE, export_body, wait_export


def test_writers_stream_json_and_csv() -> None:
    from geoexport_sdk import Rows, write_rows

    rows = [{"id": 1, "tags": ["a", "b"], "name": "x,y"}, {"id": 2, "tags": [], "name": "z"}]
    out = io.BytesIO()
    assert write_rows(iter(rows), "json", out) == 2
    assert json.loads(out.getvalue()) == rows
    out = io.BytesIO()
    assert write_rows(iter(rows), "csv", out) == 2
    parsed = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert parsed[0] == {"id": "1", "tags": '["a", "b"]', "name": "x,y"}
    out = io.BytesIO()
    assert write_rows(Rows(["id", "name"], []), "csv", out) == 0
    assert out.getvalue().decode().strip() == "id,name"  # an empty csv still has its header row
    out = io.BytesIO()
    assert write_rows([], "json", out) == 0 and json.loads(out.getvalue()) == []


def _spawn(args: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{args[0]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([str(BIN / "geoexport"), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_demo_source_end_to_end_over_http(stack, xenv, runner, tmp_path):  # type: ignore[no-untyped-def]
    """What `make run` does: API, outbox publisher, results consumer and the demo source as processes."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GEOEXPORT_PUBLIC_URL": base}
    procs = [
        _spawn(["api", "--port", str(port)], env, tmp_path),
        _spawn(["outbox-publisher"], env, tmp_path),
        _spawn(["results-consumer"], env, tmp_path),
        _spawn(["demo-source", "--base-url", base, "--group-id", f"demo-{port}"], env, tmp_path),
    ]
    try:
        def api_up() -> bool:
            for p in procs:
                assert p.poll() is None, (tmp_path / "api.log").read_text()[-2000:]
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(api_up, 60, what="the API process")
        body = export_body("csv", [{"application": "demo", "resource": "users", "filters": {"limit": 5}},
                                   {"application": "demo", "resource": "events", "filters": {"kind": "bogus"}}])
        r = httpx.post(f"{base}/api/export/v1/exports", json=body, headers=ALICE)
        assert r.status_code == 202, r.text
        eid = r.json()["id"]
        with httpx.Client(base_url=base) as http:
            try:
                final = wait_export(http, eid, timeout=120)
            except TimeoutError as exc:
                logs = {f.name: f.read_text()[-3000:] for f in tmp_path.glob("*.log")}
                raise AssertionError(f"{exc}; process logs: {json.dumps(logs, indent=1)}") from exc
            assert final["status"] == "partial", final
            events = next(s for s in final["sources"] if s["resource"] == "events")
            assert events["status"] == "failed" and "kind" in events["message"]
            with http.stream("GET", f"/api/export/v1/exports/{eid}", headers=ALICE) as resp:
                assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
                data = b"".join(resp.iter_bytes())
        zf = zipfile.ZipFile(io.BytesIO(data))
        users = list(csv.DictReader(io.StringIO(zf.read("demo-users.csv").decode())))
        assert [u["id"] for u in users] == ["1", "2", "3", "4", "5"]
        assert set(users[0]) == {"id", "username", "email", "active"}
        assert json.loads(zf.read("meta.json"))["failed_files"][0]["resource"] == "events"
    finally:
        for p in procs:
            stop_process(p)


def test_sdk_answers_over_the_results_topic_in_parts(client, xenv, tansu, runner, background):  # type: ignore[no-untyped-def]
    from core.resource_exports.consumer import run_consumer
    from core.resource_exports.outbox import run_publisher
    from geoexport_sdk import SourceApp, write_rows
    from geoexport_sdk.demo import rows

    app = SourceApp("demo", rows, bootstrap_servers=tansu.bootstrap, via="kafka", part_bytes=4096,
                    group_id=f"demo-{xenv['GEOEXPORT_KAFKA_GROUP_ID']}",
                    kafka_config={"consumer": {"max.poll.interval.ms": 10000}},
                    requests_topic=xenv["GEOEXPORT_KAFKA_REQUESTS_TOPIC"],
                    results_topic=xenv["GEOEXPORT_KAFKA_RESULTS_TOPIC"])
    background.start(app.run)
    background.start(run_consumer)
    background.start(run_publisher)
    body = export_body("json", [{"application": "demo", "resource": "events", "filters": {"limit": 300}}])
    eid = client.post("/api/export/v1/exports", json=body, headers=ALICE).json()["id"]
    assert wait_export(client, eid, timeout=120)["status"] == "complete"
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/api/export/v1/exports/{eid}", headers=ALICE).content))
    expected = io.BytesIO()
    write_rows(rows("events", {"limit": 300}, {"org_id": "org1"}, "json"), "json", expected)
    assert len(expected.getvalue()) > 3 * 4096  # it really went in several parts
    assert zf.read("demo-events.json") == expected.getvalue()
