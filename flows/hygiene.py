"""Flow-run hygiene: map jobs whose flow run died (worker killed, machine lost) are marked failed,
with their finished batches kept so that a retry resumes instead of starting over."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.db import session_scope
from core.models import JobStatus, MapJob, MapJobTask, TaskStatus
from core.models.map_jobs import ACTIVE_STATUSES

log = logging.getLogger("geoexport.hygiene")

DEAD_STATES = {"CRASHED", "FAILED", "CANCELLED", "COMPLETED"}


def _flow_run_states(ids: list[str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    states: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for fr in ids:
            try:
                run = client.read_flow_run(uuid.UUID(fr))
            except Exception:  # deleted from Prefect: nothing runs it any more
                states[fr] = "MISSING"
                continue
            states[fr] = run.state.type.value if run.state else "UNKNOWN"
    return states


def _mark_prefect_crashed(flow_run_id: str, message: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(flow_run_id), Crashed(message=message), force=True)
    except Exception as exc:
        log.warning("could not mark flow run %s crashed: %s", flow_run_id, exc)


def reconcile_crashed(stall_timeout: float) -> list[str]:
    """Mark active jobs whose flow run is over, or silent for ``stall_timeout`` seconds, as Failed."""
    now = datetime.now(UTC)
    with session_scope() as s:
        active = [(str(j.id), j.status, j.flow_run_id, j.heartbeat_at or j.started_at or j.created_at)
                  for j in s.scalars(select(MapJob).where(MapJob.status.in_(ACTIVE_STATUSES)))]
    states = _flow_run_states([fr for _, _, fr, _ in active if fr])
    crashed: list[str] = []
    for job_id, status, fr, last_seen in active:
        state = states.get(fr or "", "UNKNOWN")
        silent = now - last_seen > timedelta(seconds=stall_timeout)
        if state in DEAD_STATES or state == "MISSING":
            reason = f"flow run {fr} ended as {state.lower()} while the job was {status.value}"
        elif status == JobStatus.IN_PROGRESS and silent:
            reason = f"flow run {fr} stopped reporting (no heartbeat for {int((now - last_seen).total_seconds())}s)"
            if fr:
                _mark_prefect_crashed(fr, reason)
        else:
            continue
        if _fail_crashed(job_id, status, reason):
            crashed.append(job_id)
    return crashed


def _fail_crashed(job_id: str, seen_status: JobStatus, reason: str) -> bool:
    with session_scope() as s:
        job = s.get(MapJob, uuid.UUID(job_id), with_for_update=True)
        if job is None or job.status != seen_status:
            return False  # it moved on meanwhile (finished, or cancelled)
        job.status = JobStatus.FAILED
        job.error_reason = f"crashed: {reason}; POST /create/{job_id}/retry resumes it"
        job.completed_at = datetime.now(UTC)
        for t in s.scalars(select(MapJobTask).where(MapJobTask.job_id == job.id,
                                                    MapJobTask.status == TaskStatus.IN_PROGRESS)):
            t.status = TaskStatus.PENDING
    log.warning("map job crashed job=%s reason=%s", job_id, reason)
    return True
