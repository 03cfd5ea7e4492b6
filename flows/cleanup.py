"""The scheduled ``cleanup-expired`` flow: expired packages and exports, orphaned files."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from core.cleanup import run_cleanup


@task(name="sweep")
def sweep(dry_run: bool) -> dict:
    return run_cleanup(dry_run=dry_run).as_dict()


@flow(name="cleanup-expired")
def cleanup_expired(dry_run: bool = False) -> dict:
    summary = sweep(dry_run)
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
