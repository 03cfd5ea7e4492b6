"""Kafka both ways against a real tansu broker: the outbox of requests, and results on the results topic."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
import zipfile

from tests.conftest import wait_until
from tests.exports.conftest import ALICE, consume, export_body, wait_export

BASE = "/api/export/v1/exports"


def _unsent(export_id: str) -> int:
    from sqlalchemy import func, select

    from core.db import session_scope
    from core.models.exports import OutboxMessage

    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.export_id == uuid.UUID(export_id), OutboxMessage.sent_at.is_(None))) or 0


def test_one_cloudevent_per_source_on_the_requests_topic(client, xenv, tansu):  # type: ignore[no-untyped-def]
    body = export_body("csv", [{"application": "demo", "resource": "users", "filters": {"limit": 5}},
                               {"application": "inventory", "resource": "hosts"}])
    doc = client.post(BASE, json=body, headers=ALICE).json()
    msgs = consume(tansu.bootstrap, xenv["GEOEXPORT_KAFKA_REQUESTS_TOPIC"], 2)
    assert _unsent(doc["id"]) == 0  # sent right after the commit and marked
    by_source = {}
    for m in msgs:
        event = json.loads(m.value())
        rr = event["data"]["resource_request"]
        by_source[rr["uuid"]] = (event, rr, dict(m.headers()))
    for src in doc["sources"]:
        event, rr, headers = by_source[src["id"]]
        assert event["specversion"] == "1.0"
        assert event["type"] == "com.redhat.console.export-service.request"
        assert event["redhatorgid"] == "org1"
        assert {"id", "source", "subject", "time", "dataschema"} <= set(event)
        assert rr == {"uuid": src["id"], "export_request_uuid": doc["id"], "application": src["application"],
                      "resource": src["resource"], "format": "csv", "x-rh-identity": ALICE["x-rh-identity"],
                      "filters": src["filters"]}
        assert headers["application"] == src["application"].encode()
        assert headers["x-rh-identity"] == ALICE["x-rh-identity"].encode()
        assert json.loads(base64.b64decode(headers["x-rh-identity"]))["identity"]["org_id"] == "org1"


def test_outbox_keeps_requests_while_the_broker_is_down(client, xenv, tansu, background):  # type: ignore[no-untyped-def]
    from core.resource_exports.outbox import run_publisher

    tansu.stop()
    try:
        t0 = time.monotonic()
        r = client.post(BASE, json=export_body(), headers=ALICE)
        assert r.status_code == 202, r.text
        assert time.monotonic() - t0 < 15
        eid = r.json()["id"]
        assert _unsent(eid) == 1
    finally:
        tansu.start()  # same port, empty memory storage
    background.start(run_publisher, interval=0.2)
    wait_until(lambda: _unsent(eid) == 0, 60, what="the outbox to drain")
    (msg,) = consume(tansu.bootstrap, xenv["GEOEXPORT_KAFKA_REQUESTS_TOPIC"], 1)
    assert json.loads(msg.value())["data"]["resource_request"]["export_request_uuid"] == eid


def _produce(bootstrap: str, topic: str, messages: list[tuple[dict[str, str], bytes]]) -> list[tuple[int, int]]:
    """Send in order (one partition, as a source keyed by its id would); returns (partition, offset) of each."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    out: list[tuple[int, int]] = []
    for headers, value in messages:
        p.produce(topic, value=value, key=b"k", headers=[(k, v.encode()) for k, v in headers.items()],
                  on_delivery=lambda err, msg: out.append((msg.partition(), msg.offset())))
    assert p.flush(15) == 0
    return out


def _wait_committed(bootstrap: str, group: str, topic: str, expected: dict[int, int]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    parts = [TopicPartition(topic, p) for p in expected]
    try:
        wait_until(lambda: {tp.partition: tp.offset for tp in probe.committed(parts, timeout=5)} == expected, 60,
                   what=f"group {group} to commit {expected}")
    finally:
        probe.close()


def test_results_topic_parts_failures_and_redelivery(client, xenv, tansu, runner, background):  # type: ignore[no-untyped-def]
    from core.resource_exports.consumer import run_consumer

    topic = xenv["GEOEXPORT_KAFKA_RESULTS_TOPIC"]
    body = export_body("json", [{"application": "demo", "resource": "users"},
                                {"application": "demo", "resource": "events"},
                                {"application": "inventory", "resource": "hosts"}])
    doc = client.post(BASE, json=body, headers=ALICE).json()
    eid, (users, events, hosts) = doc["id"], [s["id"] for s in doc["sources"]]

    def h(sid: str, app: str, res: str, status: str = "complete", **extra: str) -> dict[str, str]:
        return {"export_request_uuid": eid, "uuid": sid, "application": app, "resource": res, "status": status,
                **extra}

    data = json.dumps([{"id": i, "name": f"user{i}"} for i in range(50)]).encode()
    pieces = [data[:300], data[300:700], data[700:]]
    messages = [
        (h(users, "demo", "users", part="3", parts="3"), pieces[2]),  # out of order
        (h(users, "demo", "users", part="1", parts="3"), pieces[0]),
        (h(users, "demo", "users", part="1", parts="3"), pieces[0]),  # redelivered part
        (h(events, "demo", "events"), b'{"not": "closed"'),  # malformed JSON
        (h(hosts, "inventory", "hosts", "failed"), b'{"message": "hosts service down", "error": 503}'),
        ({"uuid": users}, b"[]"),  # no export header: skipped, not fatal
        (h(users, "demo", "users", part="2", parts="3"), pieces[1]),
    ]
    delivered = _produce(tansu.bootstrap, topic, messages)
    background.start(run_consumer)

    final = wait_export(client, eid)
    assert final["status"] == "partial"
    st = {s["resource"]: s for s in final["sources"]}
    assert st["users"]["status"] == "complete"
    assert st["events"]["status"] == "failed" and "does not parse" in st["events"]["message"]
    assert (st["hosts"]["status"], st["hosts"]["message"], st["hosts"]["error"]) == ("failed", "hosts service down",
                                                                                        503)
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"{BASE}/{eid}", headers=ALICE).content))
    assert zf.read("demo-users.json") == data  # parts joined in order, the duplicate once

    # offsets are committed once stored: the group has consumed everything
    group = xenv["GEOEXPORT_KAFKA_GROUP_ID"]
    expected: dict[int, int] = {}
    for partition, offset in delivered:
        expected[partition] = max(expected.get(partition, 0), offset + 1)
    _wait_committed(tansu.bootstrap, group, topic, expected)

    # every message delivered again (a new group reads from the start): nothing changes
    stat_before = client.get(f"{BASE}/{eid}/status", headers=ALICE).json()
    background.start(run_consumer, group_id=f"{group}-replay")
    _wait_committed(tansu.bootstrap, f"{group}-replay", topic, expected)
    assert client.get(f"{BASE}/{eid}/status", headers=ALICE).json() == stat_before
    assert zipfile.ZipFile(io.BytesIO(client.get(f"{BASE}/{eid}", headers=ALICE).content)).read(
        "demo-users.json") == data


def test_sources_that_never_answer_time_out(client, xenv, runner, monkeypatch, background):  # type: ignore[no-untyped-def]
    from core.resource_exports.consumer import run_consumer
    from core.resource_exports.sweep import sweep
    from core.settings import reset_settings

    monkeypatch.setenv("GEOEXPORT_SOURCE_TIMEOUT", "1")
    reset_settings()
    body = export_body("json", [{"application": "demo", "resource": "users"},
                                {"application": "inventory", "resource": "hosts"}])
    doc = client.post(BASE, json=body, headers=ALICE).json()
    eid, (users, _hosts) = doc["id"], [s["id"] for s in doc["sources"]]
    r = client.post(f"/app/export/v1/{eid}/demo/{users}/upload", content=b"[]",
                    headers={"x-rh-exports-psk": "demo-key"})
    assert r.status_code == 202
    time.sleep(1.2)
    report = sweep()  # what a scheduled flow runs
    assert report.timed_out == [_hosts]
    final = wait_export(client, eid)
    assert final["status"] == "partial"
    hosts = next(s for s in final["sources"] if s["resource"] == "hosts")
    assert hosts["status"] == "failed" and hosts["message"] == "timed out"

    # the results consumer sweeps on its own too: an export nobody answers ends failed
    monkeypatch.setenv("GEOEXPORT_EXPORT_SWEEP_INTERVAL", "1")
    reset_settings()
    lonely = client.post(BASE, json=export_body(), headers=ALICE).json()["id"]
    background.start(run_consumer)
    final = wait_export(client, lonely)
    assert final["status"] == "failed" and final["sources"][0]["message"] == "timed out"
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"{BASE}/{lonely}", headers=ALICE).content))
    assert json.loads(zf.read("meta.json"))["failed_files"][0]["message"] == "timed out"
