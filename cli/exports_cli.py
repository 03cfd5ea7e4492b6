"""Commands of the resource-export capability: broker, outbox publisher, results consumer, demo source."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Annotated

import typer


def _logging() -> None:
    from core.logs import configure_logging

    configure_logging(logging.INFO)


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT end the loop after the message in hand (offsets stay consistent)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def broker(
    port: Annotated[int | None, typer.Option(help="Port (default GEOEXPORT_KAFKA_BROKER_PORT)")] = None,
    storage: Annotated[str, typer.Option(help="tansu storage engine URL")] = "memory://tansu/",
) -> None:
    """Run the bundled tansu Kafka-protocol broker on loopback (the embedded default)."""
    from core.kafka import tansu_argv
    from core.settings import get_settings

    argv = tansu_argv(port or get_settings().kafka_broker_port, storage=storage)
    typer.echo(f"starting {' '.join(argv)}")
    os.execv(argv[0], argv)  # become the broker: signals reach it directly


def outbox_publisher() -> None:
    """Send the export request messages of the outbox to Kafka (runs until stopped)."""
    from core.resource_exports.outbox import run_publisher

    _logging()
    run_publisher(_stop_on_signals())


def results_consumer(group_id: Annotated[str | None, typer.Option(help="Consumer group")] = None) -> None:
    """Store results from platform.export.results and fail overdue sources (runs until stopped)."""
    from core.resource_exports.consumer import run_consumer

    _logging()
    run_consumer(_stop_on_signals(), group_id=group_id)


def demo_source(
    via: Annotated[str, typer.Option(help="upload (internal API) or kafka (results topic)")] = "upload",
    psk: Annotated[str | None, typer.Option(help="Pre-shared key (default: the demo's in GEOEXPORT_PSKS)")] = None,
    base_url: Annotated[str | None, typer.Option(help="geoexport API (default GEOEXPORT_PUBLIC_URL)")] = None,
    group_id: Annotated[str, typer.Option(help="Consumer group of the demo application")] = "demo-export-source",
) -> None:
    """The demo source application: serves application 'demo' (users, events) from generated data."""
    from core.kafka import bootstrap_servers, consumer_config
    from core.settings import get_settings
    from geoexport_sdk import SourceApp
    from geoexport_sdk.demo import APPLICATION, rows

    _logging()
    s = get_settings()
    key = psk or (s.psks.get(APPLICATION) if isinstance(s.psks, dict) else (s.psks[0] if s.psks else None))
    if via == "upload" and not key:
        raise typer.BadParameter("no pre-shared key for the demo application: set GEOEXPORT_PSKS or --psk")
    cc = consumer_config(group_id)
    # the group timeouts of the results consumer: on the bundled broker a restarted member otherwise waits
    # a whole max.poll.interval for the group to rebalance
    timeouts = ("session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms")
    app = SourceApp(
        APPLICATION, rows, bootstrap_servers=bootstrap_servers(), base_url=base_url or s.base_url, psk=key, via=via,
        group_id=group_id, requests_topic=s.kafka_requests_topic, results_topic=s.kafka_results_topic,
        kafka_config={"consumer": {k: cc[k] for k in timeouts}},
    )
    app.run(_stop_on_signals())


def export_sweep() -> None:
    """Fail sources pending past GEOEXPORT_SOURCE_TIMEOUT now and relaunch stuck packaging."""
    from core.resource_exports.sweep import sweep

    _logging()
    report = sweep()
    typer.echo(json.dumps({"timed_out": report.timed_out, "launched": report.launched}))


def export_package(export_id: str) -> None:
    """Zip one finished export in this process, without Prefect (operators, benchmarks)."""
    from core.resource_exports.packaging import build_package

    _logging()
    result = build_package(export_id)
    typer.echo(json.dumps(None if result is None else result.__dict__))


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
    app.command("outbox-publisher")(outbox_publisher)
    app.command("results-consumer")(results_consumer)
    app.command("demo-source")(demo_source)
    app.command("export-sweep")(export_sweep)
    app.command("export-package")(export_package)
