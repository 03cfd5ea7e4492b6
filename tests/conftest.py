"""Shared test infrastructure: real Prefect server, real databases, real runner processes.

Prefect's settings are read from the environment, so the Prefect API URL is fixed here,
before anything imports prefect. One Prefect server serves the whole test session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="geoexport-prefect-"))
PREFECT_PORT = free_port()
PREFECT_API_URL = f"http://127.0.0.1:{PREFECT_PORT}/api"
os.environ["PREFECT_API_URL"] = PREFECT_API_URL
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.5"

BIN = Path(sys.executable).parent
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def wait_until(check: Callable[[], Any], timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server (SQLite) on a free loopback port for the whole session."""
    log = open(_PREFECT_HOME / "server.log", "wb")  # noqa: SIM115
    env = {**os.environ}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(PREFECT_PORT)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until(lambda: proc.poll() is not None or _http_ok(f"{PREFECT_API_URL}/health"), 120,
                   what="the Prefect server")
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited: {(_PREFECT_HOME / 'server.log').read_text()[-3000:]}")
        yield PREFECT_API_URL
    finally:
        stop_process(proc)
        log.close()


def _create_pg_database(base_url: str) -> tuple[str, Callable[[], None]]:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    name = f"geoexport_test_{uuid.uuid4().hex[:10]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from core.db import reset_engines

        reset_engines()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


@dataclass
class Stack:
    """One isolated deployment of geoexport: its database, storage and deployment names."""

    name: str
    db_url: str
    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def apply(self) -> None:
        from core.db import reset_engines
        from core.settings import reset_settings

        os.environ.update(self.env)
        reset_settings()
        reset_engines()


def make_stack(name: str, backend: str, root: Path, extra_env: dict[str, str] | None = None) -> Stack:
    from core.migrate import upgrade

    cleanup: list[Callable[[], None]] = []
    if backend == "postgresql":
        if not TEST_DATABASE_URL:
            pytest.skip("TEST_DATABASE_URL is not set")
        db_url, drop = _create_pg_database(TEST_DATABASE_URL)
        cleanup.append(drop)
    else:
        db_url = f"sqlite:///{root / 'geoexport.db'}"
    env = {
        "GEOEXPORT_VAR_DIR": str(root),
        "GEOEXPORT_DATABASE_URL": db_url,
        "GEOEXPORT_DATA_DIR": str(root / "data"),
        "GEOEXPORT_GPKG_DEPLOYMENT": f"gpkg-export/gpkg-export-{name}",
        "GEOEXPORT_CALLBACKS_DEPLOYMENT": f"gpkg-callbacks/gpkg-callbacks-{name}",
        "GEOEXPORT_PACKAGE_DEPLOYMENT": f"package-export/package-export-{name}",
        "GEOEXPORT_CLEANUP_DEPLOYMENT": f"cleanup-expired/cleanup-expired-{name}",
        "GEOEXPORT_CALLBACK_BACKOFF_BASE": "0.2",
        "GEOEXPORT_CALLBACK_RETRIES": "4",
        "GEOEXPORT_PUBLIC_URL": "http://testserver",
        "GEOEXPORT_BATCH_TILES": "16",
        "GEOEXPORT_AUTH": "on",
        "GEOEXPORT_JWT_SECRET": f"test-secret-{uuid.uuid4().hex}",
        **(extra_env or {}),
    }
    stack = Stack(name, db_url, root, env, cleanup)
    stack.apply()
    upgrade(db_url)
    return stack


@pytest.fixture(scope="session", params=BACKENDS)
def stack_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(request.param, request.param, tmp_path_factory.mktemp(f"stack-{request.param}"))
    yield stack
    for fn in stack.cleanup:
        fn()


@pytest.fixture
def stack(stack_base: Stack) -> Stack:
    stack_base.apply()
    return stack_base


def start_runner(stack: Stack, prefect_api: str) -> subprocess.Popen[bytes]:
    """`geoexport serve` for one stack, waiting until its deployments are registered."""
    import httpx

    log = open(stack.var_dir / f"runner-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "geoexport"), "serve"], env={**os.environ, **stack.env,
                            "PREFECT_API_URL": prefect_api}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    # every deployment of the stack: the runner registers them one after the other, and a test may launch
    # any of them first (waiting for the map deployment alone raced package-export on a slow machine)
    names = [v for k, v in stack.env.items() if k.startswith("GEOEXPORT_") and k.endswith("_DEPLOYMENT")]

    def registered() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"runner exited: {Path(log.name).read_text()[-3000:]}")
        try:
            return all(httpx.get(f"{prefect_api}/deployments/name/{name}", timeout=2).status_code == 200
                       for name in names)
        except httpx.HTTPError:
            return False

    wait_until(registered, 120, what="the runner's deployments")
    time.sleep(1.0)  # the runner polls for scheduled runs right after registering
    return proc


@pytest.fixture(scope="session")
def runner(stack_base: Stack, prefect_api: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_runner(stack_base, prefect_api)
    yield proc
    stop_process(proc)


def token(subject: str = "tester", roles: tuple[str, ...] = ("admin",), ttl: int = 3600) -> str:
    from core.tokens import mint

    return mint(subject, list(roles), ttl)


@pytest.fixture
def client(stack: Stack):  # type: ignore[no-untyped-def]
    """The API in-process, authenticated as an admin (auth stays on in every test)."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False, headers={"x-api-key": token()}) as c:
        yield c


# ---------------------------------------------------------------- rasters -------------------------------------------


@pytest.fixture(scope="session")
def demo_cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-band uint8 COG in EPSG:4326 with nodata outside a wobbly ellipse; pixel size = zoom 14."""
    from tiling.demo import write_demo_cog

    return write_demo_cog(tmp_path_factory.mktemp("rasters") / "demo.tif", width=768, height=512)


@pytest.fixture(scope="session")
def rgb_byte() -> Path:
    path = SHARED_DATA / "RGB.byte.tif"
    if not path.exists():
        pytest.skip("shared/data/RGB.byte.tif is not beside the checkout")
    return path


# ---------------------------------------------------------------- callbacks -----------------------------------------


class CallbackServer:
    """A real HTTP server on loopback that records POSTed callbacks; paths /fail-N answer 500 N times first,
    paths containing "slow" answer after 0.5 s."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[tuple[str, dict[str, Any]]] = []
        self.attempts: dict[str, int] = {}
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                if "slow" in self.path:
                    time.sleep(0.5)
                with lock:
                    n = outer.attempts[self.path] = outer.attempts.get(self.path, 0) + 1
                    fail_first = int(self.path.rsplit("fail-", 1)[1]) if "fail-" in self.path else 0
                    ok = n > fail_first
                    if ok:
                        outer.received.append((self.path, payload))
                self.send_response(200 if ok else 500)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def payloads(self, path: str) -> list[dict[str, Any]]:
        return [p for (pth, p) in self.received if pth == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback_server() -> Iterator[CallbackServer]:
    srv = CallbackServer()
    yield srv
    srv.close()
