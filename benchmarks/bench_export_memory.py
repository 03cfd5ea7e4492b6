"""Memory of a 1 GB resource export: streamed upload, streamed zip, streamed download.

Starts a throwaway API process (SQLite, temporary folder), creates an export, uploads
``--size-mb`` of JSON through the internal upload API from a generator, packages it with
``geoexport export-package`` (the same code the ``package-export`` flow runs) and downloads
the zip. Reports the peak RSS of the API process and of the packaging process; fails when
either passes ``--limit-mb`` (200).

    .venv/bin/python benchmarks/bench_export_memory.py [--size-mb 1024] [--limit-mb 200]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
IDENTITY = base64.b64encode(json.dumps(
    {"identity": {"org_id": "bench", "type": "User", "user": {"username": "bench"}}}).encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def json_rows(total: int) -> Iterator[bytes]:
    """A JSON array of ~1 KB rows of random text (so the zip is as big as the data), made on the fly."""
    yield b"["
    sent, i = 1, 0
    while sent < total - (2 << 20):
        noise = base64.b64encode(os.urandom(720 * 1024)).decode()  # ~1 MB of incompressible text
        rows = []
        for k in range(0, len(noise), 960):
            rows.append(f'{{"id": {i}, "payload": "{noise[k:k + 960]}"}},')
            i += 1
        chunk = "".join(rows).encode()
        sent += len(chunk)
        yield chunk
    yield f'{{"id": {i}, "payload": "end"}}]'.encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--limit-mb", type=float, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="geoexport-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "GEOEXPORT_VAR_DIR": str(root), "GEOEXPORT_DATABASE_URL": f"sqlite:///{root / 'bench.db'}",
        "GEOEXPORT_DATA_DIR": str(root / "data"), "GEOEXPORT_SOURCES": json.dumps({"bench": ["rows"]}),
        "GEOEXPORT_PSKS": json.dumps({"bench": "bench-key"}),
        "GEOEXPORT_MAX_UPLOAD_BYTES": str((args.size_mb + 16) << 20),
        # no broker and no Prefect: the request stays in the outbox and packaging is run here by hand
        "GEOEXPORT_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api", "PREFECT_CLIENT_MAX_RETRIES": "0",
    }
    subprocess.run([str(BIN / "geoexport"), "db", "upgrade"], env=env, check=True, capture_output=True)
    log = open(root / "api.log", "wb")  # noqa: SIM115
    api = subprocess.Popen([str(BIN / "geoexport"), "api", "--port", str(port)], env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    result: dict[str, float | int | str] = {"size_mb": args.size_mb}
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        result["api_rss_idle_mb"] = round(peak_rss_mb(api.pid), 1)
        with httpx.Client(base_url=base, timeout=600) as http:
            r = http.post("/api/export/v1/exports", headers={"x-rh-identity": IDENTITY},
                          json={"name": "bench", "format": "json", "sources": [{"application": "bench",
                                                                                 "resource": "rows"}]})
            r.raise_for_status()
            export_id, source_id = r.json()["id"], r.json()["sources"][0]["id"]
            t0 = time.monotonic()
            r = http.post(f"/app/export/v1/{export_id}/bench/{source_id}/upload", content=json_rows(args.size_mb << 20),
                          headers={"x-rh-exports-psk": "bench-key", "content-type": "application/json"})
            r.raise_for_status()
            result["upload_s"] = round(time.monotonic() - t0, 1)
            result["api_peak_rss_after_upload_mb"] = round(peak_rss_mb(api.pid), 1)

            t0 = time.monotonic()
            subprocess.run([str(BIN / "geoexport"), "export-package", export_id], env=env, check=True,
                           capture_output=True)
            result["package_s"] = round(time.monotonic() - t0, 1)
            result["package_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)

            t0 = time.monotonic()
            digest, size = hashlib.sha256(), 0
            with http.stream("GET", f"/api/export/v1/exports/{export_id}", headers={"x-rh-identity": IDENTITY}) as s:
                s.raise_for_status()
                for chunk in s.iter_bytes(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            result["download_s"] = round(time.monotonic() - t0, 1)
            result["zip_mb"] = round(size / (1 << 20), 1)
            result["api_peak_rss_mb"] = round(peak_rss_mb(api.pid), 1)
    finally:
        api.terminate()
        api.wait(15)
        log.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    peaks = [float(result["api_peak_rss_mb"]), float(result["package_peak_rss_mb"])]
    result["limit_mb"] = args.limit_mb
    result["ok"] = "yes" if max(peaks) < args.limit_mb else "no"
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] == "yes" else 1


if __name__ == "__main__":
    sys.exit(main())
