"""Prometheus metrics. Request metrics are counted in the API process; job and export figures are
read from the database at scrape time, because the work happens in flow and consumer processes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core.db import session_scope

log = logging.getLogger("geoexport.metrics")

REGISTRY = CollectorRegistry(auto_describe=False)  # no collect() (a DB query) at import

HTTP_REQUESTS = Counter(
    "geoexport_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "geoexport_http_request_duration_seconds", "HTTP request latency by route", ["method", "route"],
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class DatabaseCollector(Collector):
    """Figures of the map jobs and resource exports, counted in the shared database."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            yield from self._collect()
        except Exception as exc:  # a scrape must not fail because the database is briefly away
            log.warning("metrics: database figures unavailable: %s", exc)

    def _collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from core.models import CallbackAttempt, MapJob

        with session_scope() as s:
            jobs = CounterMetricFamily("geoexport_map_jobs", "Map jobs by current status (created = sum)",
                                       labels=["status"])
            for status, n in s.execute(select(MapJob.status, func.count()).group_by(MapJob.status)):
                jobs.add_metric([status.value], n)
            yield jobs
            tiles = s.scalar(select(func.coalesce(func.sum(MapJob.tiles_written), 0)))
            yield CounterMetricFamily("geoexport_tiles_written", "Tiles written into map packages", value=tiles)
            pkg_bytes = s.scalar(select(func.coalesce(func.sum(MapJob.file_size), 0)))
            yield CounterMetricFamily("geoexport_map_package_bytes", "Bytes of finished map packages",
                                      value=pkg_bytes)
            failed_cb = s.scalar(select(func.count()).select_from(CallbackAttempt)
                                 .where(CallbackAttempt.success.is_(False)))
            yield CounterMetricFamily("geoexport_callback_failures", "Callback attempts that failed",
                                      value=failed_cb)
            yield from self._exports(s)

    def _exports(self, s) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:  # type: ignore[no-untyped-def]
        try:
            from core.models.exports import Export, OutboxMessage
        except ImportError:
            return
        exports = CounterMetricFamily("geoexport_exports", "Resource exports by current status (created = sum)",
                                      labels=["status"])
        for status, n in s.execute(select(Export.status, func.count()).group_by(Export.status)):
            exports.add_metric([status.value], n)
        yield exports
        packaged = s.scalar(select(func.coalesce(func.sum(Export.file_size), 0)))
        yield CounterMetricFamily("geoexport_export_bytes_packaged", "Bytes of finished export zips", value=packaged)
        backlog = s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None)))
        yield GaugeMetricFamily("geoexport_outbox_backlog", "Kafka request messages not yet sent", value=backlog)
        publish_failures = s.scalar(
            select(func.coalesce(func.sum(OutboxMessage.attempts), 0) - func.count()).where(
                OutboxMessage.sent_at.is_not(None)
            )
        ) or 0
        unsent_attempts = s.scalar(
            select(func.coalesce(func.sum(OutboxMessage.attempts), 0)).where(OutboxMessage.sent_at.is_(None))
        ) or 0
        yield CounterMetricFamily("geoexport_kafka_publish_failures", "Failed attempts to publish a Kafka message",
                                  value=max(0, publish_failures) + unsent_attempts)


REGISTRY.register(DatabaseCollector())
