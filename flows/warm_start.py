"""Flow runs of the embedded runner start as forks of a warm process, not as fresh interpreters.

Prefect's runner starts each flow run with ``run_flow_in_subprocess``, a ``spawn`` process: a new
interpreter that imports Prefect, the flow's module and the raster stack before the flow can begin —
about 1.9 s on the 2-core reference machine, longer than the whole orchestration budget of a small map
package. Here the runner's flow runs are started from a ``forkserver`` instead: one helper process,
started once, imports all of that up front (``PRELOAD``) and forks a child for each flow run, which
starts in well under a second with everything already imported.

Everything else is Prefect's own code path: the same ``run_flow_in_subprocess`` (cloudpickled call,
environment, settings context, engine signal handling), the same process handle the runner joins,
cancels and watches for crashes. Only the ``multiprocessing`` start method differs, which is why this
patches the one name ``prefect.flow_engine`` resolves it through (pinned Prefect version; a test checks
that a served flow run really is a child of the fork server).

The fork server is single-threaded when it forks (``preload`` runs before it serves requests and
nothing it imports starts a thread), so a child never inherits a lock held by a thread that does not
exist in it. ``GEOEXPORT_FLOW_START=spawn`` restores Prefect's default.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
from typing import Any

log = logging.getLogger(__name__)

#: What the fork server imports once, so that a flow run's child has it already: the engine and
#: everything a flow run touches in its first second (client, settings, logging to the API, results,
#: artifacts), and the flows with the raster stack they use.
PRELOAD: list[str] = [
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.task_runners",
    "prefect.futures",
    "prefect.artifacts",
    "prefect.results",
    "prefect.runtime",
    "prefect.logging.handlers",
    "prefect.client.orchestration",
    "prefect.events.clients",
    "prefect.concurrency.v1.sync",
    "prefect.utilities.visualization",  # first Task.submit
    "anyio._backends._asyncio",
    "sqlalchemy.dialects.sqlite",  # the job store's engine
    "PIL.JpegImagePlugin",
    "PIL.PngImagePlugin",
    "tiling.render",
    "rio_tiler.io",  # tiling.render imports it on the first read that needs a warp (~0.2 s), not at import
    "rio_tiler.colormap",
    "morecantile",  # tiling.grid.TMS, built on first use
    "tiling.gpkg",
    "tiling.batchfile",
    "flows.gpkg_export",
    "flows.callbacks",
    "flows.cleanup",
    "flows.package_export",
    "flows.warm_start_tls",  # one TLS context for all of a flow run's API clients (see that module)
    "flows.warm_start_prefect",  # Prefect's schemas built, mappers configured, no suspension watch (ditto)
    "flows.warm_start_freeze",  # last: freezes what the others imported (see that module)
]


class _StartMethods:
    """Stands in for the ``multiprocessing`` module inside ``prefect.flow_engine``: whatever start method
    it asks for, it gets the fork-server context; every other attribute is the real module's."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self._context = context

    def get_context(self, method: str | None = None) -> multiprocessing.context.BaseContext:
        return self._context

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def install(method: str = "forkserver") -> bool:
    """Make this process's Prefect runner start flow runs with ``method``; returns whether it changed.

    Call it before the runner starts (``serve``). ``spawn`` leaves Prefect's default in place.
    """
    import prefect.flow_engine as engine

    if method == "spawn":
        return False
    if method != "forkserver":
        raise ValueError(f"flow start method must be 'forkserver' or 'spawn', got {method!r}")
    if "forkserver" not in multiprocessing.get_all_start_methods():
        log.warning("forkserver start method not available here; flow runs start as spawned interpreters")
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    engine.multiprocessing = _StartMethods(context)  # type: ignore[assignment]
    # start the fork server now (it imports PRELOAD: ~2 s) rather than on the first flow run
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True
