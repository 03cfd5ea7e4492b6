"""map jobs: heartbeat and attempts; tasks: render count (crash detection and resume)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.models.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("map_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", core.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("map_job_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("renders", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("map_job_tasks", schema=None) as batch_op:
        batch_op.drop_column("renders")
    with op.batch_alter_table("map_jobs", schema=None) as batch_op:
        batch_op.drop_column("attempts")
        batch_op.drop_column("heartbeat_at")
