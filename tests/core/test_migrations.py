"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import core.models as models


def test_migrations_match_models(stack) -> None:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], diff


def test_settings_reject_bad_values(monkeypatch) -> None:
    import pytest
    from pydantic import ValidationError

    from core.settings import Settings

    monkeypatch.setenv("GEOEXPORT_TILE_FORMAT", "gif")
    with pytest.raises(ValidationError):
        Settings()


def test_0005_counts_earlier_successful_callbacks_as_delivered(tmp_path, request) -> None:
    """Outcomes delivered before migration 0005 are not delivered again after it (SQLite and PostgreSQL)."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from core.migrate import alembic_config
    from tests.conftest import TEST_DATABASE_URL, _create_pg_database

    urls = [f"sqlite:///{tmp_path / 'm.db'}"]
    drops = []
    if TEST_DATABASE_URL:
        pg, drop = _create_pg_database(TEST_DATABASE_URL)
        urls.append(pg)
        drops.append(drop)
    try:
        for url in urls:
            cfg = alembic_config(url)
            command.upgrade(cfg, "0004")
            engine = create_engine(url)
            # the models of these three tables are the same at 0004 and at head
            with Session(engine) as s, s.begin():
                layer = models.Layer(source="s", product_id="p", product_name="p", product_version="1",
                                     footprint={}, bounds=[], max_resolution=1.0, max_zoom=1, bands=3, dtype="uint8")
                s.add(layer)
                s.flush()
                job = models.MapJob(layer_id=layer.id, cache_key="k", status=models.JobStatus.FAILED, bbox=[],
                                    snapped_bbox=[], target_resolution=1.0, zoom=1, tile_format="mixed",
                                    package_name="x.gpkg", callback_urls=["http://a/cb"])
                s.add(job)
                s.flush()
                for attempt, ok in ((1, False), (2, True)):
                    s.add(models.CallbackAttempt(job_id=job.id, url="http://a/cb", job_status="Failed",
                                                 attempt=attempt, success=ok))
            command.upgrade(cfg, "head")
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT url, job_status, done, delivered FROM map_job_callback_deliveries")).all()
            engine.dispose()
            assert [(u, st, bool(d), bool(dl)) for u, st, d, dl in rows] == [("http://a/cb", "Failed", True, True)]
    finally:
        for drop in drops:
            drop()
