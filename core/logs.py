"""Logging for every geoexport process: one line per event, as text or JSON (GEOEXPORT_LOG_FORMAT).

Our log calls carry ids as ``key=value`` pairs (job=…, export=…, flow_run=…); the JSON format also
lifts them into fields so a log pipeline can filter on them.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_IDS = re.compile(r"\b(job|export|source|flow_run|layer|task)=([0-9a-fA-F-]{8,36})\b")
# ?token=… in a URL (access logs of download links) must never reach a log line
_TOKEN_PARAM = re.compile(r"([?&]token=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN_PARAM.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in _IDS.findall(message):
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    from core.settings import get_settings

    handler = logging.StreamHandler()
    if get_settings().log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
