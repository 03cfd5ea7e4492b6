"""End-to-end overhead: the benchmark job through ``POST /create`` + the Prefect flow vs the one-off CLI.

Starts, as subprocesses on free loopback ports with a temporary ``GEOEXPORT_VAR_DIR``: a Prefect server,
``geoexport serve`` (the runner) and ``geoexport api`` — with the service's default settings (runner poll
every 0.5 s, flow runs forked from the runner's warm fork server, 2 tile workers, mixed format, auth on: a
token is minted with ``core.tokens.mint``; ``GEOEXPORT_RUNNER_POLL_SECONDS`` and ``GEOEXPORT_FLOW_START``
from the environment are passed through, to compare). Each
repeat registers the layer again (a new dbId, so the naive cache cannot answer) and times ``POST /create``
→ the job's callback arriving (then ``GET /create/{id}`` must say ``Completed``). The CLI renders the same job
(the job's snapped bbox, zooms 0..max, the layer's footprint as ``--footprint``) with the same format.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from bench_tools import RssPoller, process_tree, run_measured, tile_stats, validate

BIN = Path(sys.executable).parent
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check: Any, timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


class _Callbacks(http.server.BaseHTTPRequestHandler):
    """The client's callback endpoint: the job's end is timed when its callback arrives, the way a client of
    the service learns it (polling GET /create/{id} every 0.2 s would itself load the API on a busy machine)."""

    received: dict[str, tuple[float, dict]] = {}
    arrived = threading.Condition()

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        t = time.perf_counter()
        payload = json.loads(body or b"{}")
        self.send_response(200)
        self.end_headers()
        with _Callbacks.arrived:
            _Callbacks.received.setdefault(str(payload.get("requestId")), (t, payload))
            _Callbacks.arrived.notify_all()

    @classmethod
    def wait(cls, job_id: str, timeout: float) -> tuple[float, dict]:
        with cls.arrived:
            if not cls.arrived.wait_for(lambda: job_id in cls.received, timeout):
                raise TimeoutError(f"no callback for map job {job_id} in {timeout:.0f} s")
            return cls.received[job_id]

    def log_message(self, *args: Any) -> None:
        pass


def _final(client: httpx.Client, job_id: str) -> dict | None:
    body = client.get(f"/create/{job_id}").json()
    return body if body["status"] in ("Completed", "Failed", "Aborted") else None


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root``, its live descendants and the children they reaped."""
    total = 0.0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # utime stime cutime cstime are fields 14-17 (1-based), i.e. 11-14 after the command name; a
        # process's cutime/cstime hold only the children it has reaped (no longer in the tree): no double count
        total += sum(int(v) for v in fields[11:15]) / _TICK
    return total


def _phases(status: dict, t_post: float, wall: float, prefect_api: str, t_answer: float) -> dict[str, float]:
    """Split a job's wall time (client clock; the services run on the same machine): POST /create → the
    flow run starts (runner poll + flow-run process start-up) → the job is admitted (``startedAt``) →
    the job is completed (``completedAt``: rendering, merge, publication) → the client sees it."""
    from datetime import datetime

    def ts(value: str | None) -> float | None:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None

    out: dict[str, float] = {}
    try:
        run = httpx.get(f"{prefect_api}/flow_runs/{status['flowRunId']}", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        run = {}
    created, started = ts(status.get("createdAt")), ts(status.get("startedAt"))
    run_start, done = ts(run.get("start_time")), ts(status.get("completedAt"))
    seen = t_post + wall
    out["POST /create answered"] = t_answer - t_post
    try:
        states = httpx.get(f"{prefect_api}/flow_run_states/", params={"flow_run_id": status["flowRunId"]},
                           timeout=10).json()
    except (httpx.HTTPError, ValueError):
        states = []
    first = {}
    for st in sorted((s for s in states if isinstance(s, dict)), key=lambda s: s["timestamp"]):
        first.setdefault(st["type"], ts(st["timestamp"]))
    # the runner proposes PENDING when it picks the run up; the flow-run process proposes RUNNING
    if first.get("PENDING"):
        out["answered->runner picked up"] = first["PENDING"] - t_answer
        if first.get("RUNNING"):
            out["picked up->flow running"] = first["RUNNING"] - first["PENDING"]
    if created and run_start:
        out["create->flow running"] = run_start - t_post
    if run_start and started:
        out["flow running->job started"] = started - run_start
    if started and done:
        out["job started->completed"] = done - started
    if done:
        out["completed->callback received"] = seen - done
    try:
        tasks = httpx.post(f"{prefect_api}/task_runs/filter", timeout=10, json={
            "flow_runs": {"id": {"any_": [status["flowRunId"]]}}, "limit": 200}).json()
    except (httpx.HTTPError, ValueError):
        tasks = []
    spans = [(t["name"], ts(t.get("start_time")), ts(t.get("end_time"))) for t in tasks if isinstance(t, dict)]
    render = [(a, b) for name, a, b in spans if name.startswith("render") and a and b]
    if render:
        out["render tasks (first start->last end)"] = max(b for _, b in render) - min(a for a, _ in render)
    merge = [(a, b) for name, a, b in spans if name.startswith("write-geopackage") and a and b]
    if merge:
        out["write-geopackage task"] = merge[0][1] - merge[0][0]
    return out


def bench_e2e(job: Any, work: Path, workers: int, repeat: int = 3) -> dict:
    var = Path(tempfile.mkdtemp(prefix="geoexport-bench-e2e-"))
    api_port, prefect_port = free_port(), free_port()
    env = {
        **os.environ,
        "GEOEXPORT_VAR_DIR": str(var),
        "GEOEXPORT_JWT_SECRET": secrets.token_hex(32),
        "GEOEXPORT_PORT": str(api_port),
        "GEOEXPORT_PREFECT_PORT": str(prefect_port),
        "GEOEXPORT_TILE_WORKERS": str(workers),
        "PREFECT_HOME": str(var / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen] = []
    cb_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=cb_server.serve_forever, daemon=True).start()
    cb_url = f"http://127.0.0.1:{cb_server.server_address[1]}/cb"

    def start(name: str, argv: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(var / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(argv, env={**env, **(extra or {})}, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    print(f"\n== e2e ({job.name} job): Prefect server :{prefect_port}, runner, API :{api_port}, var {var} ==",
          flush=True)
    api = f"http://127.0.0.1:{api_port}"
    result: dict[str, Any] = {}
    try:
        subprocess.run([str(BIN / "geoexport"), "db", "upgrade"], env=env, check=True, capture_output=True)
        server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        prefect = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env=server_env, stdout=open(var / "prefect.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True)
        procs.append(prefect)
        _wait(lambda: httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200, 180,
              "the Prefect server", prefect)
        runner = start("runner", [str(BIN / "geoexport"), "serve"])
        _wait(lambda: httpx.get(f"{env['PREFECT_API_URL']}/deployments/name/gpkg-export/gpkg-export",
                                timeout=2).status_code == 200, 180, "the runner's deployments", runner)
        api_proc = start("api", [str(BIN / "geoexport"), "api", "--port", str(api_port)])
        cpu_of = {"runner+flow run": runner, "Prefect server": prefect, "API": api_proc}
        _wait(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "the API", api_proc)
        token = subprocess.run(
            [sys.executable, "-c", "from core.tokens import mint; print(mint('bench', ['admin'], 7200))"],
            env=env, check=True, capture_output=True, text=True, cwd=str(Path(__file__).resolve().parent.parent),
        ).stdout.strip()
        client = httpx.Client(base_url=api, headers={"x-api-key": token}, timeout=60)
        time.sleep(2.0)  # let the runner settle after registering its deployments

        from tiling.grid import resolution_for_zoom

        walls, rss, pss, biggest, cli_walls, cli_rss, jobs, phases = [], [], [], [], [], [], [], []
        for i in range(repeat):
            r = client.post("/layers", json={"source": str(job.source), "productName": f"bench-{i}"})
            r.raise_for_status()
            db_id = r.json()["dbId"]
            body = {"dbId": db_id, "bbox": list(job.bbox), "targetResolution": resolution_for_zoom(job.zoom),
                    "callbackURLs": [cb_url]}
            cpu0 = {name: tree_cpu(p.pid) for name, p in cpu_of.items()}
            with RssPoller(runner.pid, pss=True) as poll:
                t0 = time.perf_counter()
                t_post = time.time()
                created = client.post("/create", json=body)
                t_answer = t_post + (time.perf_counter() - t0)
                created.raise_for_status()
                job_id = created.json()["id"]
                t_end, payload = _Callbacks.wait(job_id, 3600)
                wall = t_end - t0
            status = _wait(partial(_final, client, job_id), 60, f"map job {job_id}")
            if status["status"] != "Completed":
                raise RuntimeError(f"map job failed: {status}")
            walls.append(wall)
            rss.append(poll.peak)
            pss.append(poll.peak_pss)
            biggest.append(poll.peak_process)
            jobs.append(status)
            time.sleep(0.5)  # let the flow-run process exit (its CPU time then counts in the runner's)
            cpu = {name: tree_cpu(p.pid) - cpu0[name] for name, p in cpu_of.items()}
            phases.append(_phases(status, t_post, wall, env["PREFECT_API_URL"], t_answer))
            phases[-1].update({f"CPU s of {name}": v for name, v in cpu.items()})
            print(f"  [e2e run {i + 1}/{repeat}] service {wall:7.2f} s  flow processes peak: summed RSS "
                  f"{poll.peak / MB:5.0f} MB, summed PSS {poll.peak_pss / MB:5.0f} MB, flow-run process RSS "
                  f"{poll.peak_process / MB:5.0f} MB  ({status['tiles']['planned']} tiles planned, "
                  f"{status['tiles']['written']} written, {len(created.json()['taskIds'])} tasks)", flush=True)
            print("    where the time goes (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases[-1].items()),
                  flush=True)
            out = work / f"e2e-{job.name}-cli.gpkg"
            out.unlink(missing_ok=True)
            out.with_name(out.name + ".sha256.json").unlink(missing_ok=True)
            snapped = status["snappedBbox"]
            # the same job: the job's snapped bbox, zooms 0..max, and the layer's footprint (the service clips
            # every tile to it, so the CLI must too)
            footprint = work / f"e2e-{job.name}-footprint.geojson"
            footprint.write_text(json.dumps(client.get(f"/layers/{db_id}").json()["footprint"]))
            run = run_measured([str(BIN / "geoexport"), "gpkg", str(job.source), "--bbox", *map(repr, snapped),
                                "--resolution", repr(resolution_for_zoom(job.zoom)), "-o", str(out), "--format",
                                "mixed", "--min-zoom", "0", "--workers", str(workers), "--footprint", str(footprint),
                                "-q"], env=env)
            cli_walls.append(run.wall)
            cli_rss.append(run.peak_rss)
            cli_info = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"  [e2e run {i + 1}/{repeat}] CLI     {run.wall:7.2f} s  peak RSS {run.peak_rss / MB:5.0f} MB  "
                  f"CPU {run.cpu:5.2f} s  "
                  f"({cli_info['tiles_planned']} planned, {cli_info['tiles_written']} written)", flush=True)
        last = jobs[-1]
        pkg = Path(var) / "data" / "packages" / last["packageName"]
        valid = validate(pkg) if pkg.exists() else "package file not found"
        stats = tile_stats(pkg) if pkg.exists() else {}
        service, cli = statistics.median(walls), statistics.median(cli_walls)
        result = {
            "service_s": round(service, 2), "service_runs": [round(w, 2) for w in walls],
            "cli_s": round(cli, 2), "cli_runs": [round(w, 2) for w in cli_walls],
            "ratio": round(service / cli, 3), "tiles_planned": last["tiles"]["planned"],
            "tiles_written": last["tiles"]["written"], "tasks": len(last["tasks"]),
            "flow_peak_rss_mb": round(max(rss) / MB), "flow_peak_pss_mb": round(max(pss) / MB),
            "flow_run_process_peak_rss_mb": round(max(biggest) / MB), "cli_peak_rss_mb": round(max(cli_rss) / MB),
            "flow_start": os.environ.get("GEOEXPORT_FLOW_START", "forkserver"),
            "runner_poll_s": _runner_poll_seconds(),
            "package_valid": "valid" if not valid else valid, "package_tiles": stats.get("tiles"),
            "phases": phases,
        }
        print(f"e2e: service {service:.2f} s vs CLI {cli:.2f} s (medians of {repeat}) -> overhead "
              f"x{service / cli:.3f} ({100 * (service / cli - 1):+.1f}%); {result['tiles_planned']} tiles planned, "
              f"{result['tiles_written']} written in {result['tasks']} tasks; flow processes peak: summed RSS "
              f"{result['flow_peak_rss_mb']} MB, summed PSS {result['flow_peak_pss_mb']} MB, flow-run process "
              f"{result['flow_run_process_peak_rss_mb']} MB; package {result['package_valid']}", flush=True)
        return result
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
        cb_server.shutdown()
        if result:
            shutil.rmtree(var, ignore_errors=True)


def _runner_poll_seconds() -> float:
    """The runner's poll interval the service ran with (the environment's, else the settings' default)."""
    from core.settings import Settings

    return Settings().runner_poll_seconds
