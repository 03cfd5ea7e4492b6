"""The one list of deployments: served by the embedded runner and written to prefect.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import Flow


@dataclass(frozen=True)
class DeploymentSpec:
    flow: Flow
    setting: str  # the Settings field holding "<flow>/<deployment>", which the API launches by
    description: str
    tags: list[str] = field(default_factory=list)
    cron: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def all_deployments() -> list[DeploymentSpec]:
    from core.settings import get_settings
    from flows.callbacks import gpkg_callbacks
    from flows.cleanup import cleanup_expired
    from flows.gpkg_export import gpkg_export

    specs = [
        DeploymentSpec(gpkg_export, "gpkg_deployment", "Render a map package (GeoPackage) of a catalog layer",
                       ["gpkg"]),
        DeploymentSpec(gpkg_callbacks, "callbacks_deployment", "Send a map job's callbacks", ["gpkg"]),
        DeploymentSpec(cleanup_expired, "cleanup_deployment", "Remove expired packages and exports, orphaned files",
                       ["ops"], cron=get_settings().cleanup_cron),
    ]
    try:
        from flows.package_export import deployments as export_deployments
    except ImportError:
        export_deployments = None
    if export_deployments is not None:
        specs.extend(export_deployments())
    return specs


def deployment_name(spec: DeploymentSpec) -> str:
    """The deployment part of the configured "<flow>/<deployment>" name."""
    from core.settings import get_settings

    full = getattr(get_settings(), spec.setting)
    flow_name, _, name = full.partition("/")
    if flow_name != spec.flow.name or not name:
        raise ValueError(f"GEOEXPORT_{spec.setting.upper()}={full!r} must be '{spec.flow.name}/<deployment name>'")
    return name


def serve_all(limit: int | None = None) -> None:
    """Serve every deployment from this process (the embedded runner of ``make run``)."""
    from prefect import serve

    runner_deployments = [
        d.flow.to_deployment(
            name=deployment_name(d),
            description=d.description,
            tags=d.tags,
            cron=d.cron,
            parameters=d.parameters or None,
        )
        for d in all_deployments()
    ]
    serve(*runner_deployments, limit=limit, print_starting_message=True)
