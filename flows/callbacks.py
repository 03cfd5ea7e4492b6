"""Callbacks: POST the job's outcome to every callback URL, with exponential backoff."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from prefect import flow, get_run_logger, task

from core import map_packages
from core.db import session_scope
from core.models import CallbackAttempt, MapJob
from core.settings import get_settings

log = logging.getLogger("geoexport.callbacks")


def _record(job_id: uuid.UUID, url: str, job_status: str, attempt: int, status_code: int | None,
            error: str | None, ok: bool) -> None:
    with session_scope() as s:
        s.add(CallbackAttempt(job_id=job_id, url=url, job_status=job_status, attempt=attempt,
                              status_code=status_code, error=error, success=ok))


def post_with_backoff(job_id: uuid.UUID, url: str, payload: dict) -> bool:
    """Attempt 1 at once, then after base, 2*base, 4*base ... seconds; every attempt is recorded."""
    settings = get_settings()
    attempts = settings.callback_retries + 1
    for attempt in range(1, attempts + 1):
        status_code: int | None = None
        error: str | None = None
        try:
            r = httpx.post(url, json=payload, timeout=settings.callback_timeout)
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


@task(name="send-callbacks")
def send_callbacks(job_id: str) -> dict[str, bool]:
    jid = uuid.UUID(job_id)
    with session_scope() as s:
        job = s.get(MapJob, jid)
        if job is None:
            return {}
        payload = map_packages.job_payload(job)
        # an outcome already delivered to a URL is not sent again (a cancelled flow and the
        # cancellation itself may both get here)
        told = {a.url for a in job.callback_attempts if a.success and a.job_status == payload["status"]}
        urls = [u for u in job.callback_urls if u not in told]
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        results = dict(zip(urls, pool.map(lambda u: post_with_backoff(jid, u, payload), urls), strict=True))
    failed = [u for u, ok in results.items() if not ok]
    if failed:
        get_run_logger().warning("callbacks failed job=%s urls=%s", job_id, failed)
    return results


@flow(name="gpkg-callbacks")
def gpkg_callbacks(job_id: str) -> dict[str, bool]:
    """Send a job's callbacks on their own (after a cancellation, or to re-send)."""
    return send_callbacks(job_id)
