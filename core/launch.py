"""Launching flow runs by deployment name — the one launch path of DESIGN.md §3.

The API and the Kafka consumer call this; whatever serves the deployment (the
embedded runner or workers of the pool) runs it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("geoexport.launch")


class LaunchError(RuntimeError):
    pass


def queue_for_priority(priority: int) -> str | None:
    """The work queue (priority band) of a map job, when the deployments run on a work pool."""
    from core.settings import get_settings

    s = get_settings()
    if not s.use_work_queues:
        return None  # the embedded runner serves deployments directly, without queues
    if priority >= s.gpkg_high_priority:
        return "gpkg-high"
    if priority >= s.gpkg_normal_priority:
        return "gpkg-normal"
    return "gpkg-low"


def launch(deployment: str, parameters: dict[str, Any], *, flow_run_name: str | None = None,
           tags: list[str] | None = None, work_queue_name: str | None = None,
           idempotency_key: str | None = None) -> str:
    """Create a flow run of ``deployment`` and return its id without waiting for it."""
    from prefect.deployments import run_deployment

    try:
        run = run_deployment(
            name=deployment,
            parameters=parameters,
            timeout=0,
            flow_run_name=flow_run_name,
            tags=tags,
            work_queue_name=work_queue_name,
            idempotency_key=idempotency_key,
            as_subflow=False,
        )
    except Exception as exc:  # the Prefect API is down or the deployment is unknown
        log.error("launch failed deployment=%s error=%s", deployment, exc)
        raise LaunchError(f"could not start {deployment}: {exc}") from exc
    from core import runner_wake
    from core.settings import get_settings

    runner_wake.wake(get_settings().var_dir)  # the embedded runner polls now rather than at its next poll
    log.info("launched deployment=%s flow_run=%s", deployment, run.id)
    return str(run.id)


def cancel(flow_run_id: str) -> None:
    """Ask Prefect to cancel a flow run; whoever runs it kills the process."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return
        if run.state and run.state.type in (StateType.SCHEDULED, StateType.PENDING):
            from prefect.states import Cancelled

            client.set_flow_run_state(flow_run_id, Cancelled(message="cancelled by user"), force=True)
            return
        client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled by user"), force=True)
