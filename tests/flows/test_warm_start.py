"""Flow runs of the embedded runner start as forks of a warm fork server (``flows.warm_start``)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

from prefect import flow

from tests.conftest import wait_until
from tests.flows.test_gpkg_export import BBOX, RES14, register, validate_gpkg, wait_final


@flow(name="warm-start-probe")
def probe(out: str) -> None:
    """Records where it ran: its parent process and what was already imported when it began."""
    Path(out).write_text(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(),
        "preloaded": [m for m in ("rasterio", "tiling.render", "flows.gpkg_export") if m in sys.modules],
        "threads": threading.active_count(),
        "frozen": __import__("gc").get_freeze_count(),
        # the engine's API clients (made before this body ran) all took the fork server's TLS context
        "tls_contexts": len(getattr(__import__("prefect.client.orchestration").client.orchestration.ssl,
                                    "_contexts", {"not installed": None})),
        **_warm_prefect(),
    }))


def _warm_prefect() -> dict:
    """What flows.warm_start_prefect left done in this process (empty where it was not preloaded)."""
    if "flows.warm_start_prefect" not in sys.modules:
        return {}
    import prefect.flow_engine as engine
    import sqlalchemy

    from core.models import MapJob
    from flows import warm_start_prefect

    deferred = warm_start_prefect.deferred_prefect_models()
    return {"deferred_models": [f"{m.__module__}.{m.__qualname__}" for m in deferred],
            "suspension_watch": engine.observe_flow_run_suspension.__module__,
            "mappers_configured": sqlalchemy.inspect(MapJob).configured}


def _proc_children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                out.append(int(name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_run_flow_in_subprocess_forks_from_the_preloaded_server(prefect_api: str, tmp_path: Path) -> None:
    import prefect.flow_engine as engine

    from flows import warm_start

    original = engine.multiprocessing
    try:
        assert warm_start.install("forkserver") is True
        proc = engine.run_flow_in_subprocess(probe, parameters={"out": str(tmp_path / "probe.json")})
        proc.join(120)
        assert proc.exitcode == 0
    finally:
        engine.multiprocessing = original
    seen = json.loads((tmp_path / "probe.json").read_text())
    from multiprocessing import forkserver

    server_pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert seen["ppid"] == server_pid != os.getpid()
    assert seen["preloaded"] == ["rasterio", "tiling.render", "flows.gpkg_export"]
    assert seen["frozen"] > 10_000  # the preloaded objects stay out of the child's collections
    assert seen["tls_contexts"] == 1
    # Prefect's deferred schemas were built and the job store's mappers configured before the fork; the
    # engine does not start its flow-run suspension watch
    assert seen["deferred_models"] == []
    assert seen["mappers_configured"] is True
    assert seen["suspension_watch"] == "flows.warm_start_prefect"
    assert "multiprocessing.forkserver" in _cmdline(server_pid)
    assert warm_start.install("spawn") is False


def test_unknown_start_method_is_refused() -> None:
    import pytest

    from flows import warm_start

    with pytest.raises(ValueError, match="forkserver' or 'spawn'"):
        warm_start.install("thread")
    assert "forkserver" in multiprocessing.get_all_start_methods()


def test_served_map_job_runs_in_a_child_of_the_runners_fork_server(client, runner, demo_cog: Path) -> None:  # type: ignore[no-untyped-def]
    servers = [p for p in _proc_children(runner.pid) if "multiprocessing.forkserver" in _cmdline(p)]
    assert len(servers) == 1, "the runner starts one fork server"
    server = servers[0]
    assert "flows.gpkg_export" in _cmdline(server)  # its preload list

    forked: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # flow runs are short here: look often
        while not stop.is_set():
            forked.update(_proc_children(server))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        db_id = register(client, demo_cog)
        job_id = client.post("/create", json={"dbId": db_id, "bbox": BBOX, "targetResolution": RES14,
                                              "callbackURLs": []}).json()["id"]
        body = wait_final(client, job_id)
    finally:
        stop.set()
        watcher.join()
    assert body["status"] == "Completed", body
    assert forked, "no flow-run process was forked from the fork server"
    validate_gpkg(_package(client, job_id))
    wait_until(lambda: not _proc_children(server), 30, what="the flow-run process to exit")


def _package(client, job_id: str) -> Path:  # type: ignore[no-untyped-def]
    from core.map_packages import package_path

    return package_path(client.get(f"/create/{job_id}").json()["packageName"])


def test_shared_tls_context_only_for_the_verified_call(tmp_path: Path) -> None:
    import ssl

    import certifi
    import prefect.client.orchestration as orchestration

    from flows import warm_start_tls

    shared = warm_start_tls.install()
    assert orchestration.ssl is shared and isinstance(shared.SSLContext, type)
    verified = shared.create_default_context(cafile=certifi.where())
    assert verified is shared.create_default_context(cafile=certifi.where())
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    # the call Prefect mutates into an unverified context is never shared
    assert shared.create_default_context() is not shared.create_default_context()
    # a changed CA file is loaded again
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    first = shared.create_default_context(cafile=str(bundle))
    os.utime(bundle, (time.time() + 5, time.time() + 5))
    assert shared.create_default_context(cafile=str(bundle)) is not first
