"""Fixtures of the resource-export tests: a real tansu broker, per-test topics and source settings."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, stop_process, wait_until

SOURCES = {"demo": ["users", "events"], "inventory": ["hosts", "packages"]}
PSKS = {"demo": "demo-key", "inventory": "inventory-key"}


class Broker:
    """The bundled tansu broker on a free loopback port; can be stopped and started again on that port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from core.kafka import port_open, tansu_argv

        log = open(self.log_dir / f"tansu-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(tansu_argv(self.port), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until(lambda: port_open("127.0.0.1", self.port, 0.5), 30, what="the tansu broker")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def xenv(stack, tansu: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Source applications, keys and a broker for this test; topics of its own so tests never cross."""
    from core.settings import reset_settings

    tag = uuid.uuid4().hex[:8]
    env = {
        "GEOEXPORT_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap,
        "GEOEXPORT_KAFKA_REQUESTS_TOPIC": f"requests-{tag}",
        "GEOEXPORT_KAFKA_RESULTS_TOPIC": f"results-{tag}",
        "GEOEXPORT_KAFKA_GROUP_ID": f"geoexport-{tag}",
        "GEOEXPORT_SOURCES": json.dumps(SOURCES),
        "GEOEXPORT_PSKS": json.dumps(PSKS),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    yield env
    _forget_exports()  # each test starts from no exports: a timeout sweep must not reach other tests' ones
    monkeypatch.undo()
    reset_settings()


def _forget_exports() -> None:
    from sqlalchemy import select

    from core.db import session_scope
    from core.models.exports import Export
    from core.resource_exports.queries import delete_export

    with session_scope() as s:
        for export in s.scalars(select(Export)).all():
            delete_export(s, export)


def identity(org_id: str = "org1", username: str = "alice", kind: str = "User", **extra: Any) -> dict[str, str]:
    ident: dict[str, Any] = {"org_id": org_id, "type": kind, "user": {"username": username}, **extra}
    return {"x-rh-identity": base64.b64encode(json.dumps({"identity": ident}).encode()).decode()}


def raw_identity(doc: Any) -> dict[str, str]:
    return {"x-rh-identity": base64.b64encode(json.dumps(doc).encode()).decode()}


ALICE = identity("org1", "alice")
BOB = identity("org1", "bob")


def export_body(fmt: str = "json", sources: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "my export", "format": fmt,
            "sources": sources if sources is not None else [{"application": "demo", "resource": "users"}], **extra}


def wait_export(client: Any, export_id: str, statuses: tuple[str, ...] = ("complete", "partial", "failed"),
                headers: dict[str, str] = ALICE, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = client.get(f"/api/export/v1/exports/{export_id}/status", headers=headers)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["status"] in statuses else None

    return wait_until(done, timeout, 0.5, what=f"export {export_id} to reach {statuses}")


def upload_url(export_id: str, application: str, source_id: str, kind: str = "upload") -> str:
    return f"/app/export/v1/{export_id}/{application}/{source_id}/{kind}"


class Background:
    """A loop function (consumer, publisher, source app) running in a thread until the test ends."""

    def __init__(self) -> None:
        self.threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> threading.Event:
        stop = threading.Event()
        t = threading.Thread(target=fn, args=(stop, *args), kwargs=kwargs, daemon=True)
        t.start()
        self.threads.append((t, stop))
        return stop

    def stop_all(self) -> None:
        for _t, stop in self.threads:
            stop.set()
        for t, _stop in self.threads:
            t.join(30)


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.stop_all()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[Any]:
    """Read ``count`` messages of ``topic`` from the beginning (a throwaway consumer group)."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe([topic])
    out: list[Any] = []
    try:
        def got() -> bool:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
            return len(out) >= count

        wait_until(got, timeout, 0, what=f"{count} messages on {topic}")
    finally:
        c.close()
    return out
