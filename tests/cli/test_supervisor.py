"""`geoexport run` (what `make run` starts): everything comes up, and one signal stops every child."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import psutil
import pytest

from tests.conftest import BIN, free_port, wait_until


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_starts_the_stack_and_a_signal_stops_all_of_it(tmp_path, sig) -> None:  # type: ignore[no-untyped-def]
    api_port, prefect_port, kafka_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOEXPORT_", "PREFECT_"))}
    env.update({
        "GEOEXPORT_VAR_DIR": str(tmp_path / "var"), "GEOEXPORT_PORT": str(api_port),
        "GEOEXPORT_PREFECT_PORT": str(prefect_port), "GEOEXPORT_KAFKA_BROKER_PORT": str(kafka_port),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    })
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    sup = subprocess.Popen([str(BIN / "geoexport"), "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        def up() -> bool:
            assert sup.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            return "[geoexport] ready" in (tmp_path / "run.log").read_text(errors="replace")

        wait_until(up, 180, 0.5, what="geoexport run")
        text = (tmp_path / "run.log").read_text(errors="replace")
        assert "demo layer     dbId" in text and "admin token" in text
        token = text.split("admin token    ", 1)[1].split()[0]
        r = httpx.get(f"http://127.0.0.1:{api_port}/layers", headers={"x-api-key": token})
        assert r.status_code == 200 and r.json()[0]["productId"] == "geoexport-demo"
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/api/health").status_code == 200

        children = psutil.Process(sup.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for piece in ("prefect server start", "geoexport serve", "geoexport api", "tansu", "outbox-publisher",
                      "results-consumer", "demo-source"):
            assert piece in names, piece

        sup.send_signal(sig)
        assert sup.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
        log.close()
