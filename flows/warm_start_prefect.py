"""Imported by the fork server (``flows.warm_start.PRELOAD``): the work every flow run repeated in its first
second, done once before forking.

- Prefect declares its API schemas with deferred pydantic builds: a model's validator and serializer are
  built the first time it is used — the flow run, its states, task runs, artifacts — again in every flow
  run. Building Prefect's deferred models here (~0.15 s, once) leaves none to build in a forked flow run.
- SQLAlchemy configures the job store's mappers on its first query, also once per flow run otherwise.
- Prefect's engine watches a deployment's flow run for a ``Suspended`` state: before the flow function
  starts it opens another API client on a thread of its own, subscribes to the server's event stream and
  waits until the subscription is live (0.2–0.5 s of every map job's start on the 2-core reference
  machine), and the server then matches every event of the run against that subscriber. geoexport's flows
  never suspend — a job is cancelled through the API, which the runner's own cancellation observer
  handles — so forked flow runs do not start that watch. Suspending a flow run from the Prefect UI is
  therefore not supported (cancel the job instead); ``GEOEXPORT_FLOW_START=spawn`` restores Prefect's
  default engine, watch included.
- The verified TLS context map-job callbacks are sent with (``flows.callbacks.tls_context``): parsing the CA
  bundle costs 40–110 ms, at the end of every job otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import prefect.flow_engine as engine
import pydantic
from pydantic._internal._mock_val_ser import MockValSer
from sqlalchemy.orm import configure_mappers

import core.models  # noqa: F401 - the mappers configured below


def deferred_prefect_models() -> list[type[pydantic.BaseModel]]:
    """Prefect's pydantic models whose validator is still a placeholder (not built yet)."""
    out, todo, seen = [], [pydantic.BaseModel], set()
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            todo.append(sub)
            if sub.__module__.startswith("prefect.") and isinstance(sub.__dict__.get("__pydantic_validator__"),
                                                                    MockValSer):
                out.append(sub)
    return out


#: Parametrised generic models the engine creates on use (pydantic caches them weakly: held here).
_GENERICS: list[type[pydantic.BaseModel]] = []


def build_prefect_models() -> int:
    from prefect.client.schemas.responses import OrchestrationResult

    _GENERICS.append(OrchestrationResult[Any])
    built = 0
    for model in deferred_prefect_models():
        try:
            model.model_rebuild()
            built += 1
        except Exception:  # noqa: BLE001 - a model that cannot be built here is built on use, as before
            pass
    return built


@contextlib.contextmanager
def no_suspension_watch(*args: Any, **kwargs: Any) -> Iterator[None]:
    """Stands in for ``prefect.flow_engine.observe_flow_run_suspension`` (pinned Prefect version)."""
    yield


def install() -> None:
    from flows.callbacks import tls_context

    build_prefect_models()
    configure_mappers()
    tls_context()
    engine.observe_flow_run_suspension = no_suspension_watch  # type: ignore[assignment]


install()
