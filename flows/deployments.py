"""The one list of deployments. The embedded runner serves it (``geoexport serve``) and
``deployments/prefect.yaml`` is generated from it (``geoexport deployments render``), so the two
cannot drift: same names, parameters, queues, concurrency limits and schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import Flow

# Work queues of the pool, by Prefect priority (1 = polled first). Map packages use three
# bands chosen by the request's `priority`; see `queue_for_priority`.
WORK_QUEUES: list[tuple[str, int, str]] = [
    ("gpkg-high", 1, "map packages with priority >= the high band"),
    ("gpkg-normal", 2, "map packages with priority >= the normal band"),
    ("gpkg-low", 3, "map packages below the normal band"),
    ("exports", 4, "resource-export packaging"),
    ("ops", 5, "callbacks and cleanup"),
]


@dataclass(frozen=True)
class DeploymentSpec:
    flow: Flow
    setting: str  # the Settings field holding "<flow>/<deployment>", which the API launches by
    description: str
    tags: list[str] = field(default_factory=list)
    cron: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    work_queue: str = "ops"
    concurrency_limit: int | None = None
    # what a run does when the deployment is at its limit: ENQUEUE waits, CANCEL_NEW drops it
    collision_strategy: str = "ENQUEUE"


def all_deployments() -> list[DeploymentSpec]:
    from core.settings import get_settings
    from flows.callbacks import gpkg_callbacks
    from flows.cleanup import cleanup_expired
    from flows.gpkg_export import gpkg_export

    s = get_settings()
    specs = [
        # No Prefect-level limit here: GEOEXPORT_GPKG_CONCURRENCY is enforced by the flow's own
        # admission gate, which (unlike Prefect's limit) lets the highest `priority` start first.
        DeploymentSpec(gpkg_export, "gpkg_deployment", "Render a map package (GeoPackage) of a catalog layer",
                       ["gpkg"], work_queue="gpkg-normal"),
        DeploymentSpec(gpkg_callbacks, "callbacks_deployment", "Send a map job's callbacks", ["gpkg"]),
        DeploymentSpec(cleanup_expired, "cleanup_deployment", "Remove expired packages and exports, orphaned files",
                       ["ops"], cron=s.cleanup_cron, concurrency_limit=1, collision_strategy="CANCEL_NEW"),
    ]
    try:
        from flows.package_export import deployments as export_deployments
    except ImportError:
        export_deployments = None
    if export_deployments is not None:
        for spec in export_deployments():
            specs.append(DeploymentSpec(
                spec.flow, spec.setting, spec.description, spec.tags, spec.cron, spec.parameters,
                work_queue="exports", concurrency_limit=s.package_concurrency,
            ))
    return specs


def deployment_name(spec: DeploymentSpec) -> str:
    """The deployment part of the configured "<flow>/<deployment>" name."""
    from core.settings import get_settings

    full = getattr(get_settings(), spec.setting)
    flow_name, _, name = full.partition("/")
    if flow_name != spec.flow.name or not name:
        raise ValueError(f"GEOEXPORT_{spec.setting.upper()}={full!r} must be '{spec.flow.name}/<deployment name>'")
    return name


def entrypoint(spec: DeploymentSpec) -> str:
    """A module entrypoint: workers import the installed package, no source checkout or pull step needed."""
    fn = spec.flow.fn
    return f"{fn.__module__}:{fn.__name__}"


def serve_all(limit: int | None = None) -> None:
    """Serve every deployment from this process (the embedded runner of ``make run``).

    The flows are added to the runner as flow objects (``Runner.add_flow``), not as deployments only:
    then the runner starts a flow run by calling the flow object in a child process, which
    ``flows.warm_start`` forks from a warm fork server, instead of a ``python -m prefect.engine``
    interpreter that imports and loads everything again (~2 s per run).
    """
    import asyncio

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from core import runner_wake
    from core.settings import get_settings
    from flows import warm_start

    settings = get_settings()
    warm_start.install(settings.flow_start)
    runner = Runner(pause_on_shutdown=True, limit=limit, query_seconds=settings.runner_poll_seconds)
    for d in all_deployments():
        limit_cfg = None
        if d.concurrency_limit:
            limit_cfg = ConcurrencyLimitConfig(limit=d.concurrency_limit,
                                               collision_strategy=ConcurrencyLimitStrategy(d.collision_strategy))
        runner.add_flow(
            d.flow,
            name=deployment_name(d),
            description=d.description,
            tags=d.tags,
            cron=d.cron,
            parameters=d.parameters or None,
            concurrency_limit=limit_cfg,
        )
        print(f"serving deployment '{d.flow.name}/{deployment_name(d)}'", flush=True)
    async def poll_now() -> None:
        poller = getattr(runner, "_scheduled_run_poller", None)  # Prefect's own poller (pinned version)
        if runner.started and poller is not None:
            await poller._get_and_submit_flow_runs()

    async def run() -> None:
        async with runner_wake.listening(settings.var_dir, poll_now) as woken:
            print(f"polling for flow runs every {settings.runner_poll_seconds:g} s"
                  f"{', and at once when one is launched' if woken else ''}; flow runs start by "
                  f"{settings.flow_start}", flush=True)
            await runner.start()

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, TerminationSignal):
        pass


def prefect_yaml() -> dict[str, Any]:
    """The content of deployments/prefect.yaml for `prefect deploy --all`."""
    from core.settings import get_settings

    pool = get_settings().work_pool
    deployments = []
    for d in all_deployments():
        entry: dict[str, Any] = {
            "name": deployment_name(d),
            "description": d.description,
            "entrypoint": entrypoint(d),
            "tags": list(d.tags),
            "parameters": dict(d.parameters),
            "work_pool": {"name": pool, "work_queue_name": d.work_queue},
        }
        if d.concurrency_limit:
            entry["concurrency_limit"] = {"limit": d.concurrency_limit, "collision_strategy": d.collision_strategy}
        entry["schedules"] = [{"cron": d.cron, "timezone": "UTC", "active": True}] if d.cron else []
        deployments.append(entry)
    return {
        "name": "geoexport",
        "prefect-version": _prefect_version(),
        "build": None,
        "push": None,
        "pull": None,
        "deployments": deployments,
    }


def _prefect_version() -> str:
    import prefect

    return prefect.__version__


def render_prefect_yaml() -> str:
    import yaml

    header = (
        "# Generated by `geoexport deployments render` from flows/deployments.py — do not edit by hand.\n"
        "# Create the work pool and its queues first: `geoexport deployments pool`\n"
        "# then: prefect deploy --all --prefect-file deployments/prefect.yaml\n"
    )
    return header + yaml.safe_dump(prefect_yaml(), sort_keys=False, default_flow_style=False)


def ensure_work_pool() -> None:
    """Create (or update) the process work pool and its priority-ordered queues."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from core.settings import get_settings

    s = get_settings()
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=s.work_pool, type="process",
                                                   description="geoexport flows (process workers)",
                                                   concurrency_limit=s.pool_concurrency))
        except ObjectAlreadyExists:
            client.update_work_pool(s.work_pool, WorkPoolUpdate(concurrency_limit=s.pool_concurrency))
        for name, priority, description in WORK_QUEUES:
            try:
                queue = client.read_work_queue_by_name(name, work_pool_name=s.work_pool)
            except ObjectNotFound:
                client.create_work_queue(name=name, work_pool_name=s.work_pool, priority=priority,
                                         description=description)
            else:
                client.update_work_queue(queue.id, priority=priority, description=description)
