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
