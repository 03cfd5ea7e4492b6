"""The scheduled ``cleanup-expired`` flow: expired packages and exports, orphaned files."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from core.cleanup import run_cleanup
from core.settings import get_settings
from flows.callbacks import send_callbacks
from flows.hygiene import reconcile_crashed


@task(name="sweep")
def sweep(dry_run: bool) -> dict:
    return run_cleanup(dry_run=dry_run).as_dict()


@task(name="reconcile-crashed")
def reconcile(stall_timeout: float) -> list[str]:
    return reconcile_crashed(stall_timeout)


@flow(name="cleanup-expired")
def cleanup_expired(dry_run: bool = False) -> dict:
    crashed = [] if dry_run else reconcile(get_settings().stall_timeout)
    for job_id in crashed:
        send_callbacks(job_id)  # a crash is a failure: the callers hear about it
    summary = sweep(dry_run)
    summary["crashed_map_jobs"] = len(crashed)
    counts = {k: v for k, v in summary.items() if k != "items"}
    get_run_logger().info("cleanup summary %s", counts)
    rows = "\n".join(f"| {k} | {v} |" for k, v in counts.items())
    items = "\n".join(f"- {i}" for i in summary["items"][:200]) or "- nothing to remove"
    create_markdown_artifact(
        key="cleanup-summary",
        markdown=f"## Cleanup {'(dry run) ' if dry_run else ''}summary\n\n"
        f"| what | count |\n|---|---|\n{rows}\n\n{items}\n",
        description="what the cleanup-expired flow removed",
    )
    return counts
