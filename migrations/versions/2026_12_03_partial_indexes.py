"""jobs: partial indexes for the results not yet posted and for the recent cost of finished jobs

Revision ID: 2c7e5a9d4f61
Revises: 9e4a6c2d8f15
Create Date: 2026-12-03 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2c7e5a9d4f61"
down_revision: str | None = "9e4a6c2d8f15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The delivery pass (after every commit) and the wait estimate (every tracked job, every second)
    # read every finished job the server ever had; with these they read only the rows they want.
    # An ended job has always had its finish time; any that lacks one is given it, since the delivery
    # pass now asks for it.
    op.execute(
        "UPDATE jobs SET finished_at = coalesce(started_at, created_at) WHERE finished_at IS NULL"
        " AND status IN ('succeeded', 'failed', 'cancelled')"
    )
    op.create_index(
        "ix_jobs_undelivered",
        "jobs",
        ["finished_at"],
        sqlite_where=sa.text("finished_at IS NOT NULL AND delivered_at IS NULL AND channel_id IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_costed", "jobs", ["finished_at", "gpu_seconds"], sqlite_where=sa.text("gpu_seconds IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_costed", table_name="jobs")
    op.drop_index("ix_jobs_undelivered", table_name="jobs")
