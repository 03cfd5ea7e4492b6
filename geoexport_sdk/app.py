"""The source-application loop: requests in, rows out, result (or error) back to the export service."""

from __future__ import annotations

import base64
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from geoexport_sdk.writers import write_rows

log = logging.getLogger("geoexport_sdk")

Handler = Callable[[str, dict[str, Any], dict[str, Any], str], Iterable[dict[str, Any]]]

PSK_HEADER = "x-rh-exports-psk"
IDENTITY_HEADER = "x-rh-identity"


@dataclass(frozen=True)
class ExportRequest:
    """One ``resource_request`` of a ``platform.export.requests`` message."""

    uuid: str  # the source id: where the result goes
    export_request_uuid: str
    application: str
    resource: str
    format: str
    filters: dict[str, Any]
    identity_header: str
    identity: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, value: bytes | str) -> ExportRequest:
        doc = json.loads(value)
        rr = doc["data"]["resource_request"]
        raw = rr.get(IDENTITY_HEADER, "")
        try:
            ident = json.loads(base64.b64decode(raw)).get("identity", {}) if raw else {}
        except ValueError:
            ident = {}
        return cls(uuid=rr["uuid"], export_request_uuid=rr["export_request_uuid"], application=rr["application"],
                   resource=rr["resource"], format=rr["format"], filters=rr.get("filters") or {},
                   identity_header=raw, identity=ident)


class SourceApp:
    """Serve export requests of one application.

    ``handler(resource, filters, identity, format)`` returns the rows (dicts) to export;
    ``identity`` is the decoded ``identity`` object of the requesting user. Results go back
    through the upload API (``base_url`` + ``psk``) or, with ``via="kafka"``, on the
    results topic in parts of ``part_bytes``.
    """

    def __init__(
        self,
        application: str,
        handler: Handler,
        *,
        bootstrap_servers: str,
        base_url: str | None = None,
        psk: str | None = None,
        via: str = "upload",
        group_id: str | None = None,
        requests_topic: str = "platform.export.requests",
        results_topic: str = "platform.export.results",
        part_bytes: int = 512 * 1024,
        kafka_config: dict[str, Any] | None = None,
        http_timeout: float = 300.0,
    ) -> None:
        if via not in ("upload", "kafka"):
            raise ValueError("via must be 'upload' or 'kafka'")
        if via == "upload" and not (base_url and psk):
            raise ValueError("via='upload' needs base_url and psk")
        self.application = application
        self.handler = handler
        self.bootstrap_servers = bootstrap_servers
        self.base_url = (base_url or "").rstrip("/")
        self.psk = psk
        self.via = via
        self.group_id = group_id or f"{application}-export-source"
        self.requests_topic = requests_topic
        self.results_topic = results_topic
        self.part_bytes = part_bytes
        self.kafka_config = kafka_config or {}
        self.http_timeout = http_timeout
        self._producer: Any = None

    # ---------------------------------------------------------------- one request ------------------------------------
    def handle(self, req: ExportRequest) -> str:
        """Produce and deliver one request's result; returns "complete" or "failed"."""
        with tempfile.TemporaryFile() as tmp:
            try:
                rows = self.handler(req.resource, req.filters, req.identity, req.format)
                count = write_rows(rows, req.format, tmp)
            except Exception as exc:
                log.exception("request failed source=%s resource=%s", req.uuid, req.resource)
                self._send_error(req, f"{type(exc).__name__}: {exc}", 500)
                return "failed"
            tmp.seek(0)
            self._send_data(req, tmp)
        log.info("request answered source=%s export=%s resource=%s rows=%d", req.uuid, req.export_request_uuid,
                 req.resource, count)
        return "complete"

    def _route(self, req: ExportRequest, kind: str) -> str:
        return f"{self.base_url}/app/export/v1/{req.export_request_uuid}/{req.application}/{req.uuid}/{kind}"

    def _send_data(self, req: ExportRequest, data: IO[bytes]) -> None:
        if self.via == "kafka":
            self._produce_parts(req, data)
            return
        import httpx

        ctype = "application/json" if req.format == "json" else "text/csv"

        def body() -> Iterable[bytes]:
            while chunk := data.read(256 * 1024):
                yield chunk

        r = httpx.post(self._route(req, "upload"), content=body(), timeout=self.http_timeout,
                       headers={PSK_HEADER: self.psk or "", "content-type": ctype})
        if r.status_code >= 400:
            log.warning("upload refused source=%s status=%d body=%s", req.uuid, r.status_code, r.text[:500])

    def _send_error(self, req: ExportRequest, message: str, error: Any) -> None:
        if self.via == "kafka":
            value = json.dumps({"message": message, "error": error}).encode()
            self._produce(req, value, [("status", b"failed")])
            self._producer_flush()
            return
        import httpx

        r = httpx.post(self._route(req, "error"), json={"message": message, "error": error},
                       headers={PSK_HEADER: self.psk or ""}, timeout=30)
        if r.status_code >= 400:
            log.warning("error report refused source=%s status=%d body=%s", req.uuid, r.status_code, r.text[:500])

    # ---------------------------------------------------------------- kafka results ---------------------------------
    def _producer_get(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer({"bootstrap.servers": self.bootstrap_servers,
                                       "message.max.bytes": max(1024 * 1024, self.part_bytes * 2),
                                       **self.kafka_config.get("producer", {})})
        return self._producer

    def _produce(self, req: ExportRequest, value: bytes, extra: list[tuple[str, bytes]]) -> None:
        headers = [("export_request_uuid", req.export_request_uuid.encode()), ("uuid", req.uuid.encode()),
                   ("application", req.application.encode()), ("resource", req.resource.encode()), *extra]
        self._producer_get().produce(self.results_topic, value=value, key=req.uuid.encode(), headers=headers)

    def _producer_flush(self) -> None:
        left = self._producer_get().flush(60)
        if left:
            raise RuntimeError(f"{left} result messages were not delivered")

    def _produce_parts(self, req: ExportRequest, data: IO[bytes]) -> None:
        size = data.seek(0, 2)
        data.seek(0)
        parts = max(1, -(-size // self.part_bytes))
        for n in range(1, parts + 1):
            chunk = data.read(self.part_bytes)
            extra = [("status", b"complete")]
            if parts > 1:
                extra += [("part", str(n).encode()), ("parts", str(parts).encode())]
            self._produce(req, chunk, extra)
            self._producer_get().poll(0)
        self._producer_flush()

    # ---------------------------------------------------------------- the loop ---------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Consume requests until ``stop`` is set; an offset is committed after its request is answered."""
        from confluent_kafka import Consumer

        stop = stop or threading.Event()
        conf = {
            "bootstrap.servers": self.bootstrap_servers, "group.id": self.group_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "max.poll.interval.ms": 300000,
            # notice the requests topic soon when it is created after this application started
            "topic.metadata.refresh.interval.ms": 2000,
            **self.kafka_config.get("consumer", {}),
        }
        consumer = Consumer(conf)
        consumer.subscribe([self.requests_topic])
        log.info("source application %s listening on %s", self.application, self.requests_topic)
        try:
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
                try:
                    req = ExportRequest.from_message(msg.value())
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("unreadable request skipped offset=%s: %s", msg.offset(), exc)
                    consumer.commit(message=msg, asynchronous=False)
                    continue
                if headers.get("application", req.application) == self.application:
                    try:
                        self.handle(req)
                    except Exception:
                        log.exception("request not answered source=%s", req.uuid)
                consumer.commit(message=msg, asynchronous=False)
        finally:
            consumer.close()
            if self._producer is not None:
                self._producer.flush(10)

