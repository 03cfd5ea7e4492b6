from __future__ import annotations

import json
import logging

from core.logs import JsonFormatter


def test_json_lines_lift_ids() -> None:
    rec = logging.LogRecord("geoexport.map_jobs", logging.INFO, __file__, 1,
                            "map job created job=%s layer=%s flow_run=%s", (
                                "0b6a3c1e-1111-2222-3333-444455556666", "9f9f9f9f-aaaa-bbbb-cccc-dddddddddddd",
                                "12345678-abcd-abcd-abcd-1234567890ab"), None)
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["level"] == "info" and doc["logger"] == "geoexport.map_jobs"
    assert doc["job"] == "0b6a3c1e-1111-2222-3333-444455556666"
    assert doc["layer"].startswith("9f9f9f9f") and doc["flow_run"].startswith("12345678")


def test_tokens_in_urls_are_redacted() -> None:
    from core.logs import RedactTokens

    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5000", "GET", "/downloads/a.gpkg?token=eyJabc.def.ghi&x=1", "1.1", 200), None)
    RedactTokens().filter(rec)
    line = rec.getMessage()
    assert "eyJabc" not in line and "/downloads/a.gpkg?token=[redacted]&x=1" in line
