"""callback deliveries: one claim per (job, url, outcome), so that an outcome is delivered once

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.models.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "map_job_callback_deliveries",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("job_status", sa.String(length=32), nullable=False),
        sa.Column("claimed_at", core.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["map_jobs.id"], name=op.f("fk_map_job_callback_deliveries_job_id_map_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "url", "job_status", name=op.f("pk_map_job_callback_deliveries")),
    )
    # outcomes delivered before this table existed count as delivered (they used to be found in the attempts)
    op.execute(
        "INSERT INTO map_job_callback_deliveries (job_id, url, job_status, claimed_at, done, delivered)"
        " SELECT job_id, url, job_status, MAX(at), TRUE, TRUE FROM map_job_callback_attempts"
        " WHERE success GROUP BY job_id, url, job_status"
    )


def downgrade() -> None:
    op.drop_table("map_job_callback_deliveries")
