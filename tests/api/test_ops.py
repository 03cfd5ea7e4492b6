"""Operations endpoints: liveness, readiness of each dependency, Prometheus metrics."""

from __future__ import annotations

from tests.conftest import free_port


def test_health(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_reports_each_dependency(client, prefect_api, monkeypatch) -> None:
    from core.settings import reset_settings

    # nothing listens on this port: the broker check must say so, the others pass
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    reset_settings()
    r = client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    checks = body["checks"]
    assert set(checks) == {"database", "prefect", "kafka", "storage"}
    assert checks["database"]["status"] == checks["prefect"]["status"] == checks["storage"]["status"] == "ok"
    assert checks["kafka"]["status"] == "error" and "no broker reachable" in checks["kafka"]["detail"]


def test_metrics(client, demo_cog) -> None:
    client.get("/layers")
    client.get("/layers/00000000-0000-0000-0000-000000000000")
    text = client.get("/metrics").text
    assert 'geoexport_http_requests_total{method="GET",route="/layers",status="200"}' in text
    assert 'route="/layers/{db_id}",status="404"' in text
    assert "geoexport_http_request_duration_seconds_bucket" in text
    assert "geoexport_tiles_written_total" in text
    assert "geoexport_callback_failures_total" in text


def test_api_start_shares_one_tls_context_between_prefect_clients(tmp_path) -> None:
    """Each launch makes a Prefect client; after the API's start-up they all take one verified TLS context
    (in a fresh interpreter: nothing else of the test session has installed it there)."""
    import subprocess
    import sys

    probe = """
import threading, time
import prefect.client.orchestration as orchestration
from fastapi.testclient import TestClient
from api.app import create_app
with TestClient(create_app()) as c:
    for t in threading.enumerate():
        if t.name == "prefect-warm-up":
            t.join(60)
    first = orchestration.get_client(sync_client=True)
    second = orchestration.get_client(sync_client=True)
    print(type(orchestration.ssl).__name__, len(orchestration.ssl._contexts))
"""
    env = {**__import__("os").environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
           "GEOEXPORT_VAR_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["_SharedVerifiedContexts", "1"]
