"""An outcome is delivered once per URL, even when two senders race for it (a cancelled flow run and the
cancellation's own callback flow both report ``Aborted``). Real database (SQLite and PostgreSQL), real
HTTP server."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from sqlalchemy import update

from core.db import session_scope
from core.models import CallbackDelivery, JobStatus, Layer, MapJob
from core.models.base import utcnow
from flows.callbacks import claim_delivery, claim_lease, send_callbacks
from tests.conftest import CallbackServer, Stack

BBOX = [35.0, 32.0, 35.1, 32.1]


def _job(urls: list[str], status: JobStatus = JobStatus.ABORTED) -> uuid.UUID:
    with session_scope() as s:
        layer = Layer(source="/nonexistent.tif", product_id="p", product_name="p", product_version="1",
                      footprint={"type": "Polygon", "coordinates": []}, bounds=BBOX, max_resolution=1e-4,
                      max_zoom=12, bands=3, dtype="uint8")
        s.add(layer)
        s.flush()
        job = MapJob(layer_id=layer.id, cache_key=uuid.uuid4().hex, status=status, bbox=BBOX, snapped_bbox=BBOX,
                     target_resolution=1e-4, zoom=12, tile_format="mixed", package_name="x.gpkg",
                     callback_urls=urls)
        s.add(job)
        s.flush()
        return job.id


def test_racing_senders_deliver_each_outcome_once(stack: Stack, callback_server: CallbackServer) -> None:
    urls = [callback_server.url("/slow-a"), callback_server.url("/slow-b")]
    job_id = _job(urls)
    start = threading.Barrier(3)
    results: list[dict[str, bool]] = []

    def sender() -> None:
        start.wait()
        results.append(send_callbacks.fn(str(job_id)))

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3
    # each URL got exactly one POST, reported as sent by exactly one of the senders
    assert callback_server.attempts == {"/slow-a": 1, "/slow-b": 1}
    assert sorted(u for r in results for u in r) == sorted(urls)
    assert all(ok for r in results for ok in r.values())
    assert [p["status"] for p in callback_server.payloads("/slow-a")] == ["Aborted"]
    # delivered: later senders do not send it again
    assert send_callbacks.fn(str(job_id)) == {}
    assert callback_server.attempts == {"/slow-a": 1, "/slow-b": 1}


def test_a_new_outcome_is_delivered_after_an_earlier_one(stack: Stack, callback_server: CallbackServer) -> None:
    url = callback_server.url("/outcomes")
    job_id = _job([url], JobStatus.FAILED)
    assert send_callbacks.fn(str(job_id)) == {url: True}
    with session_scope() as s:
        s.get(MapJob, job_id).status = JobStatus.EXPIRED
    assert send_callbacks.fn(str(job_id)) == {url: True}
    assert [p["status"] for p in callback_server.payloads("/outcomes")] == ["Failed", "Expired"]


def test_undelivered_outcome_can_be_sent_again(stack: Stack, callback_server: CallbackServer) -> None:
    # /fail-5 answers 500 five times: the first series (retries 4 -> 5 attempts) fails, a re-send succeeds
    url = callback_server.url("/fail-5")
    job_id = _job([url])
    assert send_callbacks.fn(str(job_id)) == {url: False}
    with session_scope() as s:
        d = s.get(CallbackDelivery, (job_id, url, "Aborted"))
        assert (d.done, d.delivered) == (True, False)
    assert send_callbacks.fn(str(job_id)) == {url: True}
    assert callback_server.attempts["/fail-5"] == 6


def test_claim_of_a_dead_sender_is_taken_over_after_its_lease(stack: Stack) -> None:
    job_id = _job(["http://127.0.0.1:9/never"])
    url = "http://127.0.0.1:9/never"
    assert claim_delivery(job_id, url, "Aborted")
    assert not claim_delivery(job_id, url, "Aborted")  # held, within its lease
    with session_scope() as s:
        s.execute(update(CallbackDelivery).where(CallbackDelivery.job_id == job_id)
                  .values(claimed_at=utcnow() - claim_lease() - timedelta(seconds=1)))
    assert claim_delivery(job_id, url, "Aborted")
    assert not claim_delivery(job_id, url, "Aborted")


def test_deleting_a_job_deletes_its_deliveries(stack: Stack) -> None:
    url = "http://127.0.0.1:9/never"
    job_id = _job([url])
    assert claim_delivery(job_id, url, "Aborted")
    with session_scope() as s:
        s.delete(s.get(MapJob, job_id))
    with session_scope() as s:
        assert s.get(CallbackDelivery, (job_id, url, "Aborted")) is None
