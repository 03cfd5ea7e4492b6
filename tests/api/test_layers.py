"""The raster catalog over HTTP: register, read, list, delete, refuse unreadable sources."""

from __future__ import annotations

from pathlib import Path

from shapely.geometry import box, shape


def test_register_layer_reads_the_raster(client, demo_cog: Path) -> None:
    r = client.post("/layers", json={"source": str(demo_cog), "productName": "demo", "productVersion": "2"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["productName"] == "demo" and body["productVersion"] == "2"
    assert body["bands"] == 3 and body["dtype"] == "uint8"
    assert body["maxZoom"] == 14
    assert abs(body["maxResolution"] - 180 / 256 / 2**14) < 1e-12
    # the footprint is the valid-data outline (an ellipse), clearly smaller than the raster's bounds
    fp = shape(body["footprint"])
    assert fp.geom_type in ("Polygon", "MultiPolygon")
    assert fp.area < 0.9 * box(*body["bounds"]).area or fp.area < 0.9 * box(*fp.bounds).area

    got = client.get(f"/layers/{body['dbId']}")
    assert got.status_code == 200 and got.json()["dbId"] == body["dbId"]
    assert body["dbId"] in [x["dbId"] for x in client.get("/layers").json()]

    assert client.delete(f"/layers/{body['dbId']}").status_code == 200
    r = client.get(f"/layers/{body['dbId']}")
    assert r.status_code == 404 and "not found" in r.json()["message"]


def test_reprojected_raster_footprint_is_not_its_bbox(client, rgb_byte: Path) -> None:
    r = client.post("/layers", json={"source": str(rgb_byte)})
    assert r.status_code == 201, r.text
    body = r.json()
    fp = shape(body["footprint"])
    assert -79.5 < fp.bounds[0] < -78.5 and 25 < fp.bounds[3] < 26
    assert fp.area < 0.85 * box(*fp.bounds).area  # rotated scene inside nodata borders
    assert 0.002 < body["maxResolution"] < 0.005  # 300 m pixels in degrees


def test_explicit_footprint_is_clipped_to_the_raster(client, demo_cog: Path) -> None:
    # reaches past the raster's east edge (34.81296) and south edge (31.97803)
    fp = {"type": "Polygon", "coordinates": [[[34.79, 31.95], [34.83, 31.95], [34.83, 31.99], [34.79, 31.99],
                                              [34.79, 31.95]]]}
    r = client.post("/layers", json={"source": str(demo_cog), "footprint": fp})
    assert r.status_code == 201, r.text
    minx, miny, maxx, maxy = shape(r.json()["footprint"]).bounds
    assert (minx, maxy) == (34.79, 31.99)
    assert abs(maxx - (34.78 + 768 * 180 / 256 / 2**14)) < 1e-9 and abs(miny - (32.0 - 512 * 180 / 256 / 2**14)) < 1e-9


def test_unreadable_source_is_a_400_and_nothing_is_stored(client, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-raster.tif"
    bad.write_text("hello")
    before = len(client.get("/layers").json())
    r = client.post("/layers", json={"source": str(bad)})
    assert r.status_code == 400
    assert "cannot read raster source" in r.json()["message"]
    r = client.post("/layers", json={"source": str(tmp_path / "missing.tif")})
    assert r.status_code == 400 and "cannot read raster source" in r.json()["message"]
    assert len(client.get("/layers").json()) == before


def test_bad_layer_bodies(client, demo_cog: Path) -> None:
    r = client.post("/layers", json={})
    assert r.status_code == 400 and r.json()["message"] == "source is required"
    r = client.post("/layers", json={"source": str(demo_cog), "footprint": {"type": "Point", "coordinates": [0, 0]}})
    assert r.status_code == 400 and "Polygon" in r.json()["message"]
    far = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    r = client.post("/layers", json={"source": str(demo_cog), "footprint": far})
    assert r.status_code == 400 and "does not overlap" in r.json()["message"]
    assert client.get("/layers/not-a-uuid").status_code == 400
    assert client.get("/layers/00000000-0000-0000-0000-000000000000").status_code == 404
