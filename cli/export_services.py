"""The resource-export pieces ``geoexport run`` starts: broker, outbox publisher, results consumer, demo source.

Embedded defaults: with no ``KAFKA_BOOTSTRAP_SERVERS`` the bundled tansu broker runs on
loopback; with ``GEOEXPORT_DEMO_SOURCE`` (default on) the demo application is added to
``GEOEXPORT_SOURCES`` and given a pre-shared key kept in ``var/secrets/``. These settings
are written into the environment shared by every child (``penv``), so the API, the runner
and these services all see the same broker, applications and keys.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cli.supervisor import BIN, Service
from core.kafka import port_open
from core.settings import get_settings


def demo_psk() -> str:
    """The demo application's key: made once, kept readable by the owner only."""
    path: Path = get_settings().var_dir / "secrets" / "demo-source.psk"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        os.chmod(path, 0o600)
    return path.read_text().strip()


def embedded_env() -> dict[str, str]:
    from geoexport_sdk.demo import APPLICATION, RESOURCES

    s = get_settings()
    env: dict[str, str] = {}
    if not s.kafka_bootstrap_servers:
        env["GEOEXPORT_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{s.kafka_broker_port}"
    if s.demo_source:
        sources = {**s.sources}
        sources.setdefault(APPLICATION, list(RESOURCES))
        key = demo_psk()
        psks: dict[str, str] | list[str]
        if isinstance(s.psks, dict):
            psks = {**s.psks}
            psks.setdefault(APPLICATION, key)
        elif s.psks:
            psks = [*s.psks, key]
        else:
            psks = {APPLICATION: key}
        env["GEOEXPORT_SOURCES"] = json.dumps(sources)
        env["GEOEXPORT_PSKS"] = json.dumps(psks)
    return env


def export_services(prefect_env: dict[str, str]) -> list[Service]:
    s = get_settings()
    prefect_env.update(embedded_env())  # shared with the runner and the API (see the module doc)
    env = prefect_env
    geo = str(BIN / "geoexport")
    services: list[Service] = []
    if not s.kafka_bootstrap_servers:
        port = s.kafka_broker_port
        services.append(Service("kafka-broker", [geo, "broker"], env, ready=lambda: port_open("127.0.0.1", port),
                                ready_timeout=30))
    services.append(Service("outbox-publisher", [geo, "outbox-publisher"], env))
    services.append(Service("results-consumer", [geo, "results-consumer"], env))
    if s.demo_source:
        services.append(Service("demo-source", [geo, "demo-source"], env))
    return services
