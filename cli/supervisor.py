"""``geoexport run``: every piece of the embedded stack as child processes, stopped together.

Order: database schema → Prefect server (with its UI) → runner serving the deployments →
messaging pieces (when the resource-export capability is installed) → API. Ctrl-C, or any
child dying, stops them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.settings import get_settings

BIN = Path(sys.executable).parent


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 120.0


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def prefect_env() -> dict[str, str]:
    s = get_settings()
    env = {
        "PREFECT_HOME": str((s.var_dir / "prefect").resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
    }
    env["PREFECT_API_URL"] = os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{s.prefect_port}/api"
    return env


def plan_services() -> list[Service]:
    s = get_settings()
    penv = prefect_env()
    services: list[Service] = []
    if not os.environ.get("PREFECT_API_URL"):
        services.append(Service(
            "prefect-server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(s.prefect_port)],
            {k: v for k, v in penv.items() if k != "PREFECT_API_URL"},
            ready=http_ok(f"http://127.0.0.1:{s.prefect_port}/api/health"),
        ))
    services.append(Service("runner", [str(BIN / "geoexport"), "serve"], penv))
    try:
        from cli.export_services import export_services
    except ImportError:
        pass
    else:
        services.extend(export_services(penv))
    services.append(Service(
        "api", [str(BIN / "geoexport"), "api"], penv, ready=http_ok(f"http://{s.host}:{s.port}/health")
    ))
    return services


class Supervisor:
    def __init__(self) -> None:
        self.procs: list[tuple[Service, subprocess.Popen[bytes]]] = []

    def start(self, svc: Service) -> None:
        env = {**os.environ, **svc.env}
        print(f"[geoexport] starting {svc.name}: {' '.join(svc.argv)}", flush=True)
        # own process group: Ctrl-C reaches us once, and we stop children in order
        proc = subprocess.Popen(svc.argv, env=env, start_new_session=True)
        self.procs.append((svc, proc))
        if svc.ready is None:
            return
        deadline = time.monotonic() + svc.ready_timeout
        while not svc.ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with code {proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{svc.name} did not become ready in {svc.ready_timeout:.0f}s")
            time.sleep(0.5)

    def watch(self) -> int:
        while True:
            for svc, proc in self.procs:
                if proc.poll() is not None:
                    print(f"[geoexport] {svc.name} exited with code {proc.returncode}; stopping", flush=True)
                    return 1
            time.sleep(1)

    def stop(self) -> None:
        # a second signal while stopping must not leave children behind
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # one after the other, in reverse start order: a service stops while what it depends on is still up
        # (the runner pauses its deployments through the Prefect API; signalled together with the Prefect
        # server, it retried against a closed port until it was killed)
        for svc, proc in reversed(self.procs):
            if proc.poll() is None:
                print(f"[geoexport] stopping {svc.name}", flush=True)
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_all() -> int:
    from cli.demo import ensure_demo_layer
    from core.migrate import upgrade
    from core.storage import get_storage

    s = get_settings()
    s.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    get_storage()
    sup = Supervisor()
    # Ctrl-C (SIGINT) and SIGTERM both stop everything. SIGINT is set explicitly because a shell
    # starting us in the background hands it down ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        services = plan_services()
        for svc in services:
            if svc.name == "api":
                db_id = ensure_demo_layer()
            sup.start(svc)
        _banner(db_id)
        return sup.watch()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"[geoexport] {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        sup.stop()


def _exports_example(base: str) -> str:
    if not get_settings().demo_source:
        return ""
    from core.resource_exports.identity import encode_identity

    ident = encode_identity("12345", "alice")
    return f"""
  a resource export from the demo source application (as user alice of org 12345):
    curl -s -X POST {base}/api/export/v1/exports -H 'x-rh-identity: {ident}' \\
      -H 'content-type: application/json' \\
      -d '{{"name": "demo", "format": "csv", "sources": [{{"application": "demo", "resource": "users"}}]}}'
    curl -s {base}/api/export/v1/exports/<id>/status -H 'x-rh-identity: {ident}'
    curl -s -o export.zip {base}/api/export/v1/exports/<id> -H 'x-rh-identity: {ident}'
"""


def _banner(db_id: str) -> None:
    from core.tokens import mint

    s = get_settings()
    base = s.base_url
    ui = prefect_env()["PREFECT_API_URL"].removesuffix("/api")
    if s.auth == "off":
        token_line = "  auth           OFF (GEOEXPORT_AUTH=off) — every caller is an admin"
        header = ""
    else:
        admin = mint("admin", ["admin"], 7 * 86400)
        token_line = (f"  admin token    {admin}\n"
                      "                 (7 days; mint more: .venv/bin/geoexport token --sub NAME --roles export)")
        header = f"-H 'x-api-key: {admin}' "
    print(f"""
[geoexport] ready
  API            {base}   (OpenAPI docs: {base}/docs)
  Prefect UI     {ui}
  demo layer     dbId {db_id}
{token_line}

  a map package:
    curl -s -X POST {base}/create {header}-H 'content-type: application/json' \\
      -d '{{"dbId": "{db_id}", "bbox": [34.8119, 31.9547, 34.8224, 31.9643],
           "targetResolution": 0.0000429153442382812, "callbackURLs": []}}'
{_exports_example(base)}
  Ctrl-C stops everything.
""", flush=True)
