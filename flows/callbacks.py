"""Callbacks: POST the job's outcome to every callback URL, with exponential backoff."""

from __future__ import annotations

import logging
import os
import ssl
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import cache
from typing import Any

import httpx
from prefect import flow, get_run_logger, task
from prefect.exceptions import MissingContextError
from sqlalchemy import and_, or_, update
from sqlalchemy.exc import IntegrityError

from core import map_packages
from core.db import session_scope
from core.models import CallbackAttempt, CallbackDelivery, MapJob
from core.models.base import utcnow
from core.settings import get_settings

log = logging.getLogger("geoexport.callbacks")


def _record(job_id: uuid.UUID, url: str, job_status: str, attempt: int, status_code: int | None,
            error: str | None, ok: bool) -> None:
    with session_scope() as s:
        s.add(CallbackAttempt(job_id=job_id, url=url, job_status=job_status, attempt=attempt,
                              status_code=status_code, error=error, success=ok))


def tls_context() -> ssl.SSLContext:
    """The verified TLS context callbacks are sent with, made once per process (per CA setting).

    ``httpx.post`` builds a client, and with it a context that parses the whole CA bundle, on every call —
    40–110 ms of each callback on the reference machine, even to a plain-http URL. httpx's own recipe
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured, else certifi's bundle), cached. The fork server makes it
    before forking (``flows.warm_start_prefect``), so a map job's flow run has it already.
    """
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


def post_with_backoff(job_id: uuid.UUID, url: str, payload: dict) -> bool:
    """Attempt 1 at once, then after base, 2*base, 4*base ... seconds; every attempt is recorded."""
    settings = get_settings()
    attempts = settings.callback_retries + 1
    for attempt in range(1, attempts + 1):
        status_code: int | None = None
        error: str | None = None
        try:
            r = httpx.post(url, json=payload, timeout=settings.callback_timeout, verify=tls_context())
            status_code = r.status_code
            ok = 200 <= r.status_code < 300
            if not ok:
                error = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            ok = False
            error = f"{type(exc).__name__}: {exc}"
        _record(job_id, url, payload["status"], attempt, status_code, error, ok)
        log.info("callback job=%s url=%s attempt=%d ok=%s status=%s", job_id, url, attempt, ok, status_code)
        if ok:
            return True
        if attempt < attempts:
            time.sleep(settings.callback_backoff_base * 2 ** (attempt - 1))
    return False


def claim_lease() -> timedelta:
    """How long a claim holds: longer than a whole series of attempts (every timeout and backoff) plus a
    margin, so that only a sender that died loses its claim."""
    st = get_settings()
    attempts = st.callback_retries + 1
    worst = attempts * st.callback_timeout + st.callback_backoff_base * (2 ** st.callback_retries - 1)
    return timedelta(seconds=worst + 60)


def _delivery_key(job_id: uuid.UUID, url: str, job_status: str) -> tuple[Any, ...]:
    return CallbackDelivery.job_id == job_id, CallbackDelivery.url == url, CallbackDelivery.job_status == job_status


def claim_delivery(job_id: uuid.UUID, url: str, job_status: str) -> bool:
    """Take the right to deliver ``job_status`` to ``url``; ``False`` when another sender holds it or has
    delivered it already. Atomic in the database (insert under the primary key, then a compare-and-set
    update), so two senders racing for the same outcome cannot both win."""
    try:
        with session_scope() as s:
            s.add(CallbackDelivery(job_id=job_id, url=url, job_status=job_status, claimed_at=utcnow()))
        return True
    except IntegrityError:
        pass
    now = utcnow()
    with session_scope() as s:
        taken = s.execute(
            update(CallbackDelivery)
            .where(*_delivery_key(job_id, url, job_status))
            .where(
                or_(
                    and_(CallbackDelivery.done.is_(True), CallbackDelivery.delivered.is_(False)),
                    and_(CallbackDelivery.done.is_(False), CallbackDelivery.claimed_at < now - claim_lease()),
                )
            )
            .values(claimed_at=now, done=False)
            .execution_options(synchronize_session=False)
        )
        return taken.rowcount == 1


def _finish_delivery(job_id: uuid.UUID, url: str, job_status: str, delivered: bool) -> None:
    with session_scope() as s:
        s.execute(
            update(CallbackDelivery)
            .where(*_delivery_key(job_id, url, job_status))
            .values(done=True, delivered=delivered)
            .execution_options(synchronize_session=False)
        )


def deliver(job_id: uuid.UUID, url: str, payload: dict) -> bool | None:
    """Deliver one outcome to one URL unless another sender has it or it was delivered already (a cancelled
    flow and the cancellation itself may both get here); ``None`` when skipped for that reason."""
    if not claim_delivery(job_id, url, payload["status"]):
        log.info("callback job=%s url=%s status=%s: delivered or being delivered elsewhere", job_id, url,
                 payload["status"])
        return None
    ok = False
    try:
        ok = post_with_backoff(job_id, url, payload)
    finally:
        _finish_delivery(job_id, url, payload["status"], ok)
    return ok


@task(name="send-callbacks")
def send_callbacks(job_id: str) -> dict[str, bool]:
    jid = uuid.UUID(job_id)
    with session_scope() as s:
        job = s.get(MapJob, jid)
        if job is None:
            return {}
        payload = map_packages.job_payload(job)
        urls = list(job.callback_urls)
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        sent = dict(zip(urls, pool.map(lambda u: deliver(jid, u, payload), urls), strict=True))
    results = {u: ok for u, ok in sent.items() if ok is not None}
    failed = [u for u, ok in results.items() if not ok]
    if failed:
        try:
            logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
        except MissingContextError:  # called outside a flow or task run
            logger = log
        logger.warning("callbacks failed job=%s urls=%s", job_id, failed)
    return results


@flow(name="gpkg-callbacks")
def gpkg_callbacks(job_id: str) -> dict[str, bool]:
    """Send a job's callbacks on their own (after a cancellation, or to re-send)."""
    return send_callbacks(job_id)
