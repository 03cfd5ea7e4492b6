"""The results consumer (``geoexport results-consumer``): platform.export.results → stored results.

One member of a consumer group. An offset is committed only after its message is stored;
a fault that may pass (database down) rewinds to the message and retries it, so nothing is
lost, and redelivery is harmless because storing is idempotent. Every
``GEOEXPORT_EXPORT_SWEEP_INTERVAL`` seconds it also fails overdue sources.
"""

from __future__ import annotations

import logging
import threading
import time

from core.resource_exports.result_messages import ingest
from core.resource_exports.sweep import sweep
from core.settings import get_settings

log = logging.getLogger("geoexport.results")


def run_consumer(stop: threading.Event | None = None, *, group_id: str | None = None) -> None:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from core.kafka import consumer_config, ensure_topics

    settings = get_settings()
    stop = stop or threading.Event()
    topic = settings.kafka_results_topic
    while not stop.is_set():
        try:
            ensure_topics([topic, settings.kafka_requests_topic])
            break
        except Exception as exc:  # broker not up yet
            log.warning("waiting for the broker: %s", exc)
            stop.wait(2)
    consumer = Consumer(consumer_config(group_id or settings.kafka_group_id))
    consumer.subscribe([topic])
    log.info("results consumer started topic=%s group=%s", topic, group_id or settings.kafka_group_id)
    next_sweep = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + settings.export_sweep_interval
                try:
                    sweep()
                except Exception as exc:
                    log.exception("sweep failed: %s", exc)
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", msg.error())
                continue
            try:
                outcome = ingest(msg.headers(), msg.value())
            except Exception as exc:
                # not stored: go back to this message and try it again after a pause
                log.exception("result not stored, will retry offset=%s: %s", msg.offset(), exc)
                consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                stop.wait(2)
                continue
            log.info("result message offset=%s outcome=%s", msg.offset(), outcome)
            try:
                consumer.commit(message=msg, asynchronous=False)
            except Exception as exc:  # a rebalance took the partition: the new owner redelivers, harmlessly
                log.warning("commit failed offset=%s: %s", msg.offset(), exc)
    finally:
        consumer.close()
        log.info("results consumer stopped")
