"""The ``package-export`` flow: zip a resource export once every source has finished.

Launched by deployment name (GEOEXPORT_PACKAGE_DEPLOYMENT) exactly once per export by
core.resource_exports.results.start_packaging. ``sweep_exports`` is the task a scheduled
flow (cleanup) calls to fail sources that never answered.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from core.resource_exports import packaging
from core.resource_exports.sweep import sweep
from flows.deployments import DeploymentSpec


def _retry_io_only(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """A full or flaky disk is worth a retry; a logic error is not."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(name="build-zip", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_io_only,
      task_run_name="build-zip-{export_id}")
def build_zip(export_id: str) -> dict | None:
    result = packaging.build_package(export_id)
    return None if result is None else {
        "status": result.status, "file_size": result.file_size, "files": result.files, "failed": result.failed,
    }


@task(name="sweep-exports")
def sweep_exports() -> dict:
    """Fail sources pending past GEOEXPORT_SOURCE_TIMEOUT and relaunch packaging that never started."""
    report = sweep()
    return {"timed_out": report.timed_out, "launched": report.launched}


@flow(name="package-export", flow_run_name="package-{export_id}", log_prints=False)
def package_export(export_id: str) -> dict | None:
    logger = get_run_logger()
    try:
        result = build_zip(export_id)
    except Exception as exc:
        packaging.mark_failed(export_id, f"packaging failed: {type(exc).__name__}: {exc}")
        logger.error("export=%s packaging failed: %s", export_id, exc)
        raise
    if result is None:
        logger.info("export=%s was deleted; nothing to package", export_id)
    else:
        logger.info("export=%s status=%s files=%d failed=%d bytes=%d", export_id, result["status"],
                    len(result["files"]), result["failed"], result["file_size"])
    return result


def deployments() -> list[DeploymentSpec]:
    return [
        DeploymentSpec(package_export, "package_deployment",
                       "Zip a resource export (one file per source, meta.json, README.md)", ["exports"]),
    ]
