"""The outbox publisher: request messages are rows written with their export; this sends and marks them.

A sender first claims rows with a short lease (one UPDATE guarded by "unsent and not
leased"), so the API's immediate attempt after commit and the long-running publisher
never send the same row at once. A row is marked sent only on the broker's delivery
report; anything else releases the lease and the row is tried again later.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from core.db import session_scope
from core.models.base import utcnow
from core.models.exports import OutboxMessage

log = logging.getLogger("geoexport.outbox")

LEASE = timedelta(seconds=30)


def pending_count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))) or 0


def _claim(limit: int, export_ids: Iterable[uuid.UUID] | None) -> tuple[str, list[OutboxMessage]]:
    token = uuid.uuid4().hex
    now = utcnow()
    with session_scope() as s:
        q = select(OutboxMessage.id).where(
            OutboxMessage.sent_at.is_(None),
            or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now),
        )
        if export_ids is not None:
            q = q.where(OutboxMessage.export_id.in_(list(export_ids)))
        ids = list(s.scalars(q.order_by(OutboxMessage.id).limit(limit)))
        if not ids:
            return token, []
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.sent_at.is_(None),
                   or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now))
            .values(lease_token=token, lease_until=now + LEASE)
        )
    with session_scope() as s:
        rows = list(s.scalars(select(OutboxMessage).where(OutboxMessage.lease_token == token)
                              .order_by(OutboxMessage.id)))
    return token, rows


def publish_pending(producer: Any = None, *, limit: int = 200, timeout: float = 5.0,
                    export_ids: Iterable[uuid.UUID] | None = None) -> int:
    """Send up to ``limit`` unsent messages; returns how many the broker acknowledged."""
    from confluent_kafka import Producer

    from core.kafka import producer_config

    token, rows = _claim(limit, export_ids)
    if not rows:
        return 0
    own = producer is None
    if own:
        producer = Producer(producer_config())
    delivered: list[int] = []
    errors: dict[int, str] = {}

    def report(row_id: int):  # type: ignore[no-untyped-def]
        def cb(err, _msg):  # type: ignore[no-untyped-def]
            if err is None:
                delivered.append(row_id)
            else:
                errors[row_id] = str(err)
        return cb

    for row in rows:
        try:
            producer.produce(row.topic, value=row.value.encode(), key=row.key.encode() if row.key else None,
                             headers=[(k, v.encode()) for k, v in row.headers], on_delivery=report(row.id))
        except Exception as exc:  # BufferError or a config problem: leave it for the next round
            errors[row.id] = f"{type(exc).__name__}: {exc}"
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        # The broker did not answer in time: drop the queued copies so they cannot arrive later as
        # duplicates; the rows stay unsent and are retried.
        producer.purge()
        producer.flush(0)
    now = utcnow()
    with session_scope() as s:
        if delivered:
            s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(delivered), OutboxMessage.lease_token == token)
                      .values(sent_at=now, lease_token=None, lease_until=None,
                              attempts=OutboxMessage.attempts + 1, last_error=None))
        failed = [r.id for r in rows if r.id not in set(delivered)]
        for row_id in failed:
            s.execute(update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.lease_token == token)
                      .values(lease_token=None, lease_until=None, attempts=OutboxMessage.attempts + 1,
                              last_error=errors.get(row_id, "broker did not acknowledge in time")[:2000]))
    if delivered:
        log.info("outbox sent=%d", len(delivered))
    if failed:
        log.warning("outbox unsent=%d (broker unavailable?) first_error=%s", len(failed),
                    errors.get(failed[0], "no acknowledgement"))
    return len(delivered)


def try_publish_now(export_id: uuid.UUID, timeout: float = 2.0) -> None:
    """Best effort right after an export's commit; the publisher loop covers every failure."""
    try:
        publish_pending(export_ids=[export_id], timeout=timeout)
    except Exception as exc:
        log.warning("immediate publish failed export=%s error=%s", export_id, exc)


def run_publisher(stop: threading.Event | None = None, interval: float | None = None) -> None:
    """The long-running publisher (``geoexport outbox-publisher``)."""
    from confluent_kafka import Producer

    from core.kafka import producer_config
    from core.settings import get_settings

    stop = stop or threading.Event()
    interval = interval if interval is not None else get_settings().outbox_poll_interval
    producer = Producer(producer_config())
    log.info("outbox publisher started")
    while not stop.is_set():
        try:
            sent = publish_pending(producer)
        except Exception as exc:  # the database may be briefly unavailable; keep going
            log.exception("outbox round failed: %s", exc)
            sent = 0
        if not sent:
            stop.wait(interval)
    producer.flush(5)
    log.info("outbox publisher stopped")


def wait_sent(timeout: float = 30.0) -> bool:
    """Wait until the outbox is empty (used by tools and tests)."""
    deadline = time.monotonic() + timeout
    while pending_count():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
