"""POST /create refuses every bad request with the exact status and a message saying what to fix.

None of these requests reaches Prefect: validation happens before anything is recorded.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

# inside the test raster's valid area (the seed's own example bbox is used by the demo layer of `make run`)
BBOX = [34.790, 31.984, 34.800, 31.994]
SEED_RES = 0.0000429153442382812


@pytest.fixture
def layer_id(client, demo_cog: Path) -> str:
    r = client.post("/layers", json={"source": str(demo_cog)})
    assert r.status_code == 201, r.text
    return r.json()["dbId"]


def body(layer_id: str, **over):  # type: ignore[no-untyped-def]
    b = {"dbId": layer_id, "bbox": BBOX, "targetResolution": SEED_RES,
         "callbackURLs": ["http://127.0.0.1:9/cb"], "crs": "EPSG:4326", "priority": 0}
    b.update(over)
    return {k: v for k, v in b.items() if v is not ...}


CASES = [
    ("bbox wrong order", {"bbox": [34.82, 31.95, 34.81, 31.96]}, "minx < maxx"),
    ("bbox latitudes swapped", {"bbox": [34.81, 31.96, 34.82, 31.95]}, "miny < maxy"),
    ("bbox 3 numbers", {"bbox": [34.81, 31.95, 34.82]}, "exactly 4 numbers"),
    ("bbox out of range", {"bbox": [34.81, 31.95, 34.82, 95.0]}, "latitudes must be within"),
    ("bbox longitude out of range", {"bbox": [-200, 31.95, 34.82, 31.96]}, "longitudes must be within"),
    ("bbox not numbers", {"bbox": ["a", 1, 2, 3]}, "bbox"),
    ("resolution zero", {"targetResolution": 0}, "positive number"),
    ("resolution negative", {"targetResolution": -1}, "positive number"),
    ("resolution too coarse", {"targetResolution": 5}, "out of range"),
    ("resolution finer than the layer", {"targetResolution": SEED_RES / 4}, "finer than the layer's own resolution"),
    ("resolution beyond the grid", {"targetResolution": 1e-12}, "out of range"),
    ("unsupported crs", {"crs": "EPSG:3857"}, "not supported"),
    ("callback not a URL", {"callbackURLs": ["not a url"]}, "is not an http(s) URL"),
    ("callback ftp", {"callbackURLs": ["ftp://example.com/x"]}, "is not an http(s) URL"),
    ("priority negative", {"priority": -1}, "priority"),
    ("priority too large", {"priority": 1_000_000_000}, "priority"),
    ("missing bbox", {"bbox": ...}, "bbox is required"),
    ("missing targetResolution", {"targetResolution": ...}, "targetResolution is required"),
    ("missing callbackURLs", {"callbackURLs": ...}, "callbackURLs is required"),
    ("bbox outside the footprint", {"bbox": [10.0, 10.0, 10.1, 10.1]}, "outside the layer footprint"),
    # inside the raster's bounds but in its nodata corner, outside the valid-data outline
    ("bbox in the nodata corner", {"bbox": [34.7801, 31.9960, 34.7806, 31.9999]}, "outside the layer footprint"),
]


@pytest.mark.parametrize(("case", "over", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_400_with_message(client, layer_id: str, case: str, over: dict, expected: str) -> None:
    r = client.post("/create", json=body(layer_id, **over))
    assert r.status_code == 400, (case, r.text)
    assert expected in r.json()["message"], r.json()


def test_bad_dbid_is_400_and_unknown_dbid_is_404(client, layer_id: str) -> None:
    r = client.post("/create", json=body("not-a-uuid"))
    assert r.status_code == 400 and "dbId" in r.json()["message"]
    r = client.post("/create", json=body(str(uuid.uuid4())))
    assert r.status_code == 404 and "not found" in r.json()["message"]


def test_body_not_json_is_400(client) -> None:
    r = client.post("/create", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["message"] == "request body is not valid JSON"


def test_package_larger_than_free_space_is_507(client, layer_id: str, monkeypatch) -> None:
    # The free-space figure is the operating system's; a tiny budget is the only way to exceed it here.
    from core import storage

    monkeypatch.setattr(storage.Storage, "usage", lambda self: (10, 10_000))
    r = client.post("/create", json=body(layer_id))
    assert r.status_code == 507 and "free" in r.json()["message"]


def test_storage_reports_the_volume(client) -> None:
    r = client.get("/storage")
    assert r.status_code == 200
    assert 0 < r.json()["free"] <= r.json()["size"]


def test_unknown_job_is_404(client) -> None:
    assert client.get(f"/create/{uuid.uuid4()}").status_code == 404
    assert client.get("/create/nope").status_code == 400
    assert client.delete(f"/create/{uuid.uuid4()}").status_code == 404
